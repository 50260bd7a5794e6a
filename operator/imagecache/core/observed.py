"""What the operator has observed of the cluster: requests by key, pods by namespace (pure).

Fed by the watch (kopf's event handlers) one object at a time and, at every resync, by a full
list (`replace_requests`, `replace_pods`) that forgets what the list no longer has: an object
deleted while the watch was down is gone after the next resync, whatever kopf's relist kept.

Each change says which requests it affects, so the loop marks only those dirty: a pod change
affects the single-pod requests naming it and the selector requests (of its namespace) whose
selector matched it before or matches it now; a pod whose `PodInfo` did not change (most pod
status updates) affects nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from imagecache.core.expectations import is_older
from imagecache.core.planning import RequestView
from imagecache.core.targets import PodInfo, selector_matches

RequestKey = tuple[str, str]


@dataclass(frozen=True)
class Resynced:
    """What a resync changed: requests forgotten (gone) and keys whose object changed."""

    gone: tuple[RequestView, ...] = ()
    changed: frozenset[RequestKey] = frozenset()


class Observed:
    """Requests and pods as last seen, with the request ↔ pod dependencies kept current."""

    def __init__(self) -> None:
        self.requests: dict[RequestKey, RequestView] = {}
        self.pods: dict[str, dict[str, PodInfo]] = {}
        self._naming: dict[tuple[str, str], set[RequestKey]] = {}
        self._selecting: dict[str, set[RequestKey]] = {}
        self._touched: dict[tuple[str, str], int] = {}
        self.pod_epoch = 0
        """Counts pod changes seen from the watch; a resync leaves alone pods touched after
        its list began (`replace_pods` ``since``)."""

    # -- requests --------------------------------------------------------------------------------

    def request(self, key: RequestKey) -> RequestView | None:
        """The request as last seen (None: not known, or gone)."""
        return self.requests.get(key)

    def set_request(self, view: RequestView) -> RequestView | None:
        """Record a request (added or changed); the previous view."""
        old = self.requests.get(view.key)
        if old is not None:
            self._unlink(old)
        self.requests[view.key] = view
        self._link(view)
        return old

    def drop_request(self, key: RequestKey) -> RequestView | None:
        """Forget a request (deleted); the view it had."""
        old = self.requests.pop(key, None)
        if old is not None:
            self._unlink(old)
        return old

    def _link(self, view: RequestView) -> None:
        if view.selector_form:
            self._selecting.setdefault(view.namespace, set()).add(view.key)
        elif view.spec.get("pod"):
            name = (view.namespace, str(view.spec["pod"]))
            self._naming.setdefault(name, set()).add(view.key)

    def _unlink(self, view: RequestView) -> None:
        if view.selector_form:
            self._selecting.get(view.namespace, set()).discard(view.key)
        elif view.spec.get("pod"):
            name = (view.namespace, str(view.spec["pod"]))
            keys = self._naming.get(name)
            if keys is not None:
                keys.discard(view.key)
                if not keys:
                    del self._naming[name]

    # -- pods ------------------------------------------------------------------------------------

    def pods_in(self, namespace: str) -> Mapping[str, PodInfo]:
        """The pods of one namespace by name."""
        return self.pods.get(namespace, {})

    def set_pod(self, pod: PodInfo) -> set[RequestKey]:
        """Record a pod (added or changed); the requests that change affects."""
        self.pod_epoch += 1
        self._touched[(pod.namespace, pod.name)] = self.pod_epoch
        listed = self.pods.setdefault(pod.namespace, {})
        old = listed.get(pod.name)
        if old == pod:
            return set()
        listed[pod.name] = pod
        return self._affected(pod.namespace, pod.name, old, pod)

    def drop_pod(self, namespace: str, name: str) -> set[RequestKey]:
        """Forget a pod (deleted); the requests that affects."""
        self.pod_epoch += 1
        self._touched[(namespace, name)] = self.pod_epoch
        listed = self.pods.get(namespace)
        old = listed.pop(name, None) if listed is not None else None
        if old is None:
            return set()
        return self._affected(namespace, name, old, None)

    def _affected(
        self, namespace: str, name: str, old: PodInfo | None, new: PodInfo | None
    ) -> set[RequestKey]:
        keys = set(self._naming.get((namespace, name), ()))
        for key in self._selecting.get(namespace, ()):
            view = self.requests[key]
            selector = view.spec.get("podSelector") or {}
            if any(
                pod is not None and selector_matches(selector=selector, labels=pod.labels)
                for pod in (old, new)
            ):
                keys.add(key)
        return keys

    # -- resync ----------------------------------------------------------------------------------

    def replace_requests(
        self, listed: Iterable[RequestView], *, list_version: str, namespaces: Iterable[str] = ()
    ) -> Resynced:
        """Make the requests what a full list says (objects newer than the list are kept).

        `namespaces` limits the list's scope (empty: the whole cluster).
        """
        scope = set(namespaces)
        fresh = {view.key: view for view in listed}
        gone: list[RequestView] = []
        changed: set[RequestKey] = set()
        for key, view in list(self.requests.items()):
            if scope and key[0] not in scope:
                continue
            if key not in fresh and not is_older(list_version, view.resource_version):
                gone.append(view)
                self.drop_request(key)
        for key, view in fresh.items():
            known = self.requests.get(key)
            if known is None or (
                known.resource_version != view.resource_version
                and not is_older(view.resource_version, known.resource_version)
            ):
                self.set_request(view)
                changed.add(key)
        return Resynced(gone=tuple(gone), changed=frozenset(changed))

    def replace_pods(
        self, listed: Iterable[PodInfo], *, since: int, namespaces: Iterable[str] = ()
    ) -> set[RequestKey]:
        """Make the pods what a full list says; the requests affected by any difference.

        `since` is `pod_epoch` when the list was requested: a pod the watch reported after that
        is newer than the list and left alone.
        """
        scope = set(namespaces)
        fresh: dict[tuple[str, str], PodInfo] = {(p.namespace, p.name): p for p in listed}
        affected: set[RequestKey] = set()

        def stale(key: tuple[str, str]) -> bool:
            return self._touched.get(key, 0) <= since

        for namespace, pods in list(self.pods.items()):
            if scope and namespace not in scope:
                continue
            for name in [n for n in pods if (namespace, n) not in fresh]:
                if stale((namespace, name)):
                    affected |= self.drop_pod(namespace, name)
        for key, pod in fresh.items():
            if stale(key):
                affected |= self.set_pod(pod)
        if len(self._touched) > 2 * sum(len(p) for p in self.pods.values()) + 1024:
            self._touched = {
                (ns, name): self._touched.get((ns, name), 0)
                for ns, pods in self.pods.items()
                for name in pods
            }
        return affected
