"""The kopf handler registry, built from settings (no import-time registration).

`build_registry` returns a fresh `kopf.OperatorRegistry` with:

* a pod index (namespace -> `PodInfo`), so resolving pods never calls the API (get/list/watch);
* a timer per ImageCacheRequest ticking every ``poll_interval``: one `Reconciler.reconcile`
  pass, one merge patch of the status when (and only when) it changed, events on phase changes;
* a delete handler, only for ``evictOnDelete: true`` objects (so no finalizer otherwise);
* a deletion watcher that drops the object from the phase metric;
* the login: in-cluster service account, else ``KUBECONFIG`` (or a test's own login).

Handlers stay thin: they parse kopf's kwargs, call the reconciler, apply its outcome, and map
errors to kopf's retries through `as_kopf_error`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from imagecache.controller.errors import ControllerError, as_kopf_error
from imagecache.controller.metrics import OperatorMetrics
from imagecache.controller.reconciling import Reconciler, RequestMemory
from imagecache.controller.settings import OperatorSettings
from imagecache.core.status import Event, merge_patch
from imagecache.core.targets import PodInfo, pod_info

GROUP = "imagecache.dev"
VERSION = "v1alpha1"
PLURAL = "imagecacherequests"
_MEMORY_KEY = "imagecache_request"

LoginFn = Callable[..., kopf.ConnectionInfo | None]


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The usual way: the in-cluster service account, else the ``KUBECONFIG`` file."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is None:
        info = kopf.login_with_kubeconfig(**kwargs)
    return info


class PodSignals:
    """Wakes resting requests when a pod in their namespace changes (fed by pod events)."""

    def __init__(self) -> None:
        self._events: dict[str | None, asyncio.Event] = {}

    def changed(self, namespace: str | None) -> None:
        event = self._events.pop(namespace, None)
        if event is not None:
            event.set()

    def event(self, namespace: str | None) -> asyncio.Event:
        return self._events.setdefault(namespace, asyncio.Event())


async def _rest(
    memory: RequestMemory, *, now: float, generation: int, wake: list[Awaitable[Any]]
) -> None:
    """Sleep while the request is settled: until its recheck is due or something wakes it.

    A settled request (every target Cached, or failed for good, or waiting for its pod) needs
    no pass at every tick; it sleeps inside the tick instead, so idle objects cost nothing.
    """
    delay = memory.quiet_until - now
    if delay <= 0 or memory.generation != generation:
        for waiter in wake:
            if asyncio.iscoroutine(waiter):
                waiter.close()
        return
    tasks = [asyncio.ensure_future(waiter) for waiter in wake]
    try:
        await asyncio.wait(tasks, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        memory.quiet_until = 0.0


def _memory(memo: Any) -> RequestMemory:
    memory = memo.get(_MEMORY_KEY)
    if not isinstance(memory, RequestMemory):
        memory = RequestMemory()
        memo[_MEMORY_KEY] = memory
    return memory


def _pods(index: Any, namespace: str | None) -> list[PodInfo]:
    return list(index.get(namespace, [])) if namespace is not None else []


def _post(body: Any, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


async def _stopped(stopped: Any) -> None:
    await stopped.wait()


def _deletion_started(meta: Mapping[str, Any]) -> datetime | None:
    raw = meta.get("deletionTimestamp")
    if not raw:
        return None
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def build_registry(
    *,
    settings: OperatorSettings,
    reconciler: Reconciler,
    metrics: OperatorMetrics,
    login: LoginFn | None = None,
) -> kopf.OperatorRegistry:
    """All handlers of one operator, bound to its reconciler and metrics."""
    registry = kopf.OperatorRegistry()
    login_fn = login or default_login

    @kopf.on.login(registry=registry)
    def authenticate(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login_fn(**kwargs)

    signals = PodSignals()

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_changed(namespace: str | None, **_: Any) -> None:
        signals.changed(namespace)

    @kopf.index("", "v1", "pods", id="pods_by_namespace", registry=registry)
    def pods_by_namespace(
        body: kopf.Body, namespace: str | None, **_: Any
    ) -> dict[str | None, PodInfo]:
        return {namespace: pod_info(body)}

    @kopf.timer(GROUP, VERSION, PLURAL, interval=settings.poll_interval, registry=registry)
    async def track(
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
        memo: Any,
        namespace: str | None,
        uid: str,
        **kwargs: Any,
    ) -> None:
        if meta.get("deletionTimestamp"):
            return  # being deleted: eviction (if any) owns the object now; never re-queue
        memory = _memory(memo)
        memory.stopped = kwargs["stopped"]
        if memory.gone:
            _retire(memory)
            return
        generation = int(meta.get("generation") or 1)
        wakeup = memory.wakeup = asyncio.Event()
        await _rest(
            memory,
            now=reconciler.now(),
            generation=generation,
            wake=[wakeup.wait(), signals.event(namespace).wait(), _stopped(kwargs["stopped"])],
        )
        if kwargs["stopped"] or memory.gone or meta.get("deletionTimestamp"):
            return
        # What we wrote last is the freshest view of our own status (the watch may lag).
        base = memory.written if memory.written is not None else copy.deepcopy(dict(status))
        try:
            outcome = await reconciler.reconcile(
                spec=spec,
                status=base,
                generation=generation,
                pods=_pods(kwargs["pods_by_namespace"], namespace),
                memory=memory,
            )
        except ControllerError as error:
            raise as_kopf_error(error, delay=settings.retry_backoff_cap) from error
        changes = merge_patch(old=base, new=outcome.status)
        if changes:
            for key, value in changes.items():
                patch.status[key] = value
            memory.written = outcome.status
        metrics.set_phase(str(uid), outcome.status.get("phase"))
        _post(body, outcome.events)

    def evicts_on_delete(spec: kopf.Spec, **_: Any) -> bool:
        return bool(spec.get("evictOnDelete"))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, when=evicts_on_delete)
    async def evict(
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        memo: Any,
        namespace: str | None,
        **kwargs: Any,
    ) -> None:
        outcome = await reconciler.evict(
            spec=spec,
            pods=_pods(kwargs["pods_by_namespace"], namespace),
            memory=_memory(memo),
            deletion_started=_deletion_started(meta),
        )
        _post(body, outcome.events)
        if not outcome.done and outcome.error is not None:
            raise as_kopf_error(outcome.error, delay=outcome.retry_in)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def observe(event: kopf.RawEvent, uid: str, meta: kopf.Meta, memo: Any, **_: Any) -> None:
        memory = _memory(memo)
        if event.get("type") == "DELETED":
            metrics.set_phase(str(uid), None)
            memory.gone = True
            if memory.wakeup is not None:
                memory.wakeup.set()
            _retire(memory)
            return
        changed = int(meta.get("generation") or 1) != memory.generation
        if (changed or meta.get("deletionTimestamp")) and memory.wakeup is not None:
            memory.wakeup.set()  # a spec change (or deletion) ends the rest at once

    _spawn_without_finalizer(registry)
    return registry


def _spawn_without_finalizer(registry: kopf.OperatorRegistry) -> None:
    """Let the timer run without a finalizer on the object.

    kopf makes every timer require a finalizer (to stop it before the object disappears), but
    SPEC §4.1 item 6 wants no finalizer unless ``evictOnDelete``; our timer tolerates the object
    vanishing (kopf treats a 404 on the status patch as "gone" and the DELETED event stops it).
    kopf has no public switch for this, so the flag is flipped on the registered handlers.
    """
    spawning: Any = registry._spawning
    spawning._handlers = [
        dataclasses.replace(handler, requires_finalizer=False) for handler in spawning._handlers
    ]


def _retire(memory: RequestMemory) -> None:
    """Stop the timer of a request deleted without a finalizer.

    The other half of `_spawn_without_finalizer`: kopf stops timers when it sees a
    ``deletionTimestamp``, which an object without finalizers never shows (it is simply gone),
    so on its DELETED event we set the timer's stop flag ourselves -- the flag kopf itself sets
    for a deleted resource -- and the timer task ends instead of ticking forever.
    """
    setter = getattr(memory.stopped, "_setter", None)
    if setter is not None and not setter.is_set():
        setter.set(kopf.DaemonStoppingReason.RESOURCE_DELETED)


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
    config.posting.level = 20
    config.networking.request_timeout = max(30.0, settings.request_timeout * 3)
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.queueing.worker_limit = None
    return config
