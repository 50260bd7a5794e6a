"""The kopf handler registry, built from settings (no import-time registration).

`build_registry` returns a fresh `kopf.OperatorRegistry` using kopf's public API only:

* one index, ``pods`` (by namespace, as `PodInfo`): kopf calls event handlers only once every
  index is populated, so the first call hands the full pod list to the `ReconcileLoop`
  (`attach`) and the loop never acts on a half-listed cluster;
* event handlers on requests and pods that pass every watch event to the loop
  (`observe_request`, `observe_pod`): the loop marks dirty only the requests a change affects;
* a delete handler, only for ``evictOnDelete: true`` objects: the only finalizer the operator
  ever adds. A request deleted without it simply leaves the index;
* the login: in-cluster service account, else ``KUBECONFIG`` (or a test's own login).

Status and events are not written here but by the loop, through the `KubernetesWrites` port.
Handlers are coroutines: kopf would run plain functions in a thread pool, a thread hop per
watch event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf

from imagecache.controller.kubeapi import (
    GROUP,
    PLURAL,
    VERSION,
    KubernetesWrites,
    ObjectRef,
    WriteFailed,
)
from imagecache.controller.loop import ReconcileLoop
from imagecache.controller.reconciling import Reconciler
from imagecache.controller.settings import OperatorSettings
from imagecache.core.planning import request_view
from imagecache.core.targets import PodInfo, pod_info

LoginFn = Callable[..., kopf.ConnectionInfo | None]

logger = logging.getLogger("imagecache.controller.handlers")


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The usual way: the in-cluster service account, else the ``KUBECONFIG`` file."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is None:
        info = kopf.login_with_kubeconfig(**kwargs)
    return info


def _raw(event: Any, body: kopf.Body) -> Mapping[str, Any]:
    """The object as the watch delivered it (kopf's ``event`` kwarg), else kopf's body view.

    The raw dict is read (and copied, `core.planning.request_view`) far faster than kopf's
    live views of it, at one event per status write of every request.
    """
    raw = event.get("object") if isinstance(event, Mapping) else None
    return raw if isinstance(raw, dict) else body


def _deletion_started(meta: Mapping[str, Any]) -> datetime | None:
    raw = meta.get("deletionTimestamp")
    if not raw:
        return None
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def build_registry(
    *,
    settings: OperatorSettings,
    loop: ReconcileLoop,
    reconciler: Reconciler,
    writes: KubernetesWrites,
    login: LoginFn | None = None,
) -> kopf.OperatorRegistry:
    """All handlers of one operator, bound to its loop, reconciler and write port."""
    registry = kopf.OperatorRegistry()
    login_fn = login or default_login

    @kopf.on.login(registry=registry)
    def authenticate(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login_fn(**kwargs)

    @kopf.index("", "v1", "pods", id="pods", registry=registry)
    async def pods(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str | None, PodInfo]:
        return {namespace: pod_info(body)}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def request_event(body: kopf.Body, **kwargs: Any) -> None:
        loop.attach(pods=kwargs["pods"])
        loop.observe_request(kwargs.get("type"), _raw(kwargs.get("event"), body))

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(body: kopf.Body, **kwargs: Any) -> None:
        loop.attach(pods=kwargs["pods"])
        loop.observe_pod(kwargs.get("type"), _raw(kwargs.get("event"), body))

    def evicts_on_delete(spec: kopf.Spec, **_: Any) -> bool:  # a filter: kopf calls it inline
        return bool(spec.get("evictOnDelete"))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, when=evicts_on_delete)
    async def evict(body: kopf.Body, meta: kopf.Meta, retry: int, **kwargs: Any) -> None:
        request = request_view(body)
        outcome = await reconciler.evict(
            request=request,
            pods=list(loop.observed.pods_in(request.namespace).values()),
            deletion_started=_deletion_started(meta),
            attempt=retry,
        )
        ref = ObjectRef(namespace=request.namespace, name=request.name, uid=request.uid)
        for event in outcome.events:
            try:
                await writes.post_event(
                    ref, type=event.type, reason=event.reason, message=event.message
                )
            except WriteFailed as error:
                logger.warning("%s (event dropped)", error)
        if not outcome.done:
            raise kopf.TemporaryError(f"eviction: {outcome.error}", delay=outcome.retry_in)

    return registry


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: the operator has no create, update or resume handlers, so nothing to diff.

    kopf builds an "essence" (a deep copy of the whole body) on every watch event and, with a
    delete handler registered, stores it in an annotation after each object's creation: one
    more patch of every request and one more watch event, for a diff nothing reads. Here every
    object's essence is empty and never stored; deletion is still seen (it does not come from
    the diff), so the evict-on-delete handler runs as before.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class EvictionProgress(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations (the evict-on-delete handler's retries), under our prefix.

    kopf also "clears" the diff-base essences of progress annotations on every watch event (a
    deep copy and a walk of the annotations, twice per event); with `NoDiffBase` they are
    always empty, so here they are passed through as they are.
    """

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


IDLE_WORKER_SECONDS = 1.0
"""How long kopf keeps an object's worker after its last watch event (kopf's default: 5 s).

An idle worker holds the last event's body. A fleet's requests each see an event every few
seconds while they fill (their own status writes echoed), so at kopf's default nearly every
request's worker stays alive through a burst: ~10,000 bodies held at 10,000 requests. A
worker is cheap to start again (one task) next to processing the event it starts for.
Measured (bench/operator_scale.py, 10,000 requests, two runs each): peak RSS 250-266 MiB at
5 s, 223-227 MiB at 1 s, operator CPU the same within the runs' spread.
"""


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's own settings for our operator: annotations under imagecache.dev, no scanning."""
    config = kopf.OperatorSettings()
    config.persistence.finalizer = f"{GROUP}/evict-on-delete"
    config.persistence.progress_storage = EvictionProgress(prefix=GROUP)
    config.persistence.diffbase_storage = NoDiffBase()
    # Resources are discovered once at start: no CRD or namespace watching (least privilege).
    config.scanning.disabled = True
    config.peering.standalone = True
    config.posting.enabled = False
    config.networking.request_timeout = max(30.0, settings.request_timeout * 3)
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.queueing.worker_limit = None
    config.queueing.idle_timeout = IDLE_WORKER_SECONDS
    return config
