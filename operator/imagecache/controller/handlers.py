"""The kopf handler registry, built from settings (no import-time registration).

`build_registry` returns a fresh `kopf.OperatorRegistry` using kopf's public API only:

* two indexes, ``requests`` (ImageCacheRequests as `RequestView`) and ``pods`` (by namespace, as
  `PodInfo`): kopf keeps them current from its watches, and they need no finalizer;
* an event handler on requests that hands both indexes to the `ReconcileLoop` -- kopf calls it
  only once every index is populated, so the loop never acts on a half-listed cluster;
* a delete handler, only for ``evictOnDelete: true`` objects: the only finalizer the operator
  ever adds. A request deleted without it simply leaves the index;
* the login: in-cluster service account, else ``KUBECONFIG`` (or a test's own login).

Status and events are not written here but by the loop, through the `KubernetesWrites` port.
Handlers are coroutines: kopf would run plain functions in a thread pool, a thread hop per
watch event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
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
from imagecache.core.planning import RequestView
from imagecache.core.targets import PodInfo, pod_info

LoginFn = Callable[..., kopf.ConnectionInfo | None]

logger = logging.getLogger("imagecache.controller.handlers")


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The usual way: the in-cluster service account, else the ``KUBECONFIG`` file."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is None:
        info = kopf.login_with_kubeconfig(**kwargs)
    return info


def request_view(body: Mapping[str, Any]) -> RequestView:
    """A detached copy of what the loop needs from an ImageCacheRequest body."""
    meta = body.get("metadata") or {}
    return RequestView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 1),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec=_plain(body.get("spec") or {}),
        status=_plain(body.get("status") or {}),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _plain(value: Any) -> Any:
    """A deep plain-dict/list copy (kopf's bodies are live views)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _deletion_started(meta: Mapping[str, Any]) -> datetime | None:
    raw = meta.get("deletionTimestamp")
    if not raw:
        return None
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def _pods(index: Any, namespace: str | None) -> list[PodInfo]:
    if namespace is None or namespace not in index:
        return []
    return list(index[namespace])


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

    @kopf.index(GROUP, VERSION, PLURAL, id="requests", registry=registry)
    async def requests(
        body: kopf.Body, namespace: str | None, name: str | None, **_: Any
    ) -> dict[tuple[str | None, str | None], RequestView]:
        return {(namespace, name): request_view(body)}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def indexed(**kwargs: Any) -> None:
        if not loop.indexed.is_set():
            loop.attach(requests=kwargs["requests"], pods=kwargs["pods"])

    def evicts_on_delete(spec: kopf.Spec, **_: Any) -> bool:  # a filter: kopf calls it inline
        return bool(spec.get("evictOnDelete"))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, when=evicts_on_delete)
    async def evict(body: kopf.Body, meta: kopf.Meta, retry: int, **kwargs: Any) -> None:
        request = request_view(body)
        outcome = await reconciler.evict(
            request=request,
            pods=_pods(kwargs["pods"], request.namespace),
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


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's own settings for our operator: annotations under imagecache.dev, no scanning."""
    config = kopf.OperatorSettings()
    config.persistence.finalizer = f"{GROUP}/evict-on-delete"
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Resources are discovered once at start: no CRD or namespace watching (least privilege).
    config.scanning.disabled = True
    config.peering.standalone = True
    config.posting.enabled = False
    config.networking.request_timeout = max(30.0, settings.request_timeout * 3)
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.queueing.worker_limit = None
    return config
