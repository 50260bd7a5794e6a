"""The operator's one reconcile loop: every ``poll_interval``, all requests at once.

Each tick snapshots kopf's two indexes (requests, pods), plans with `core.planning.plan_tick`
(targets grouped by agent endpoint), asks each planned agent once (``GET /v2/cache``), reconciles
every request (``PUT`` where needed), and writes through the `KubernetesWrites` port only what
changed against the object's *live* status (`core.writes.decide_write`). Writes run beside the
ticks (at most 32 at once, one per object), so a slow API server does not slow the polling. A
failed write is logged, counted and simply retried by a later tick: nothing about a request
ever stops.

The indexes are handed over by kopf's handlers (`attach`); the loop does nothing until kopf has
populated them (`indexed`), so it never mistakes a not-yet-listed pod for a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from imagecache.controller.kubeapi import KubernetesWrites, ObjectRef, WriteFailed
from imagecache.controller.metrics import OperatorMetrics
from imagecache.controller.reconciling import Outcome, Reconciler, Reports
from imagecache.controller.settings import OperatorSettings
from imagecache.core.planning import RequestPlan, RequestView, plan_tick
from imagecache.core.targets import PodInfo
from imagecache.core.writes import decide_write

logger = logging.getLogger("imagecache.controller.loop")

WRITE_CONCURRENCY = 32


@dataclass
class WriteMemory:
    """What this operator last wrote to one object.

    `base_version` is the live resourceVersion the write was diffed against: while the index
    still shows it, the watch has not delivered our write yet and `written` is the fresher base.
    """

    uid: str
    base_version: str
    written: dict[str, Any]
    written_at: float


def _values(index: Any) -> Iterator[Any]:
    """Every value of a kopf index (a mapping of keys to stores of values)."""
    for store in list(index.values()):
        yield from list(store)


class ReconcileLoop:
    """One per operator; `run` until stopped; `tick` is one pass (tests call it too)."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        reconciler: Reconciler,
        writes: KubernetesWrites,
        metrics: OperatorMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._reconciler = reconciler
        self._writes = writes
        self._metrics = metrics
        self._monotonic = monotonic
        self._requests: Mapping[Any, Any] | None = None
        self._pods: Mapping[Any, Any] | None = None
        self._memory: dict[tuple[str, str], WriteMemory] = {}
        self._write_limit = asyncio.Semaphore(WRITE_CONCURRENCY)
        self._writing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._resting: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.indexed = asyncio.Event()
        self.started_at: float | None = None
        self.last_tick_at: float | None = None
        self.ticks = 0

    def attach(self, *, requests: Mapping[Any, Any], pods: Mapping[Any, Any]) -> None:
        """Take kopf's indexes (live mappings); called from a handler once they are populated."""
        self._requests, self._pods = requests, pods
        self.indexed.set()

    def stuck(self) -> bool:
        """True when the loop runs but has not completed a tick for far longer than a tick."""
        if self.started_at is None:
            return False
        last = self.last_tick_at if self.last_tick_at is not None else self.started_at
        limit = 3 * self._settings.poll_interval + self._settings.request_timeout
        return self._monotonic() - last > limit

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``poll_interval`` until `stop` is set; a tick's error never ends the loop."""
        self.started_at = self._monotonic()
        try:
            while not stop.is_set():
                began = self._monotonic()
                try:
                    await self.tick()
                except Exception:
                    logger.exception("reconcile tick failed; the next tick tries again")
                rest = max(0.0, self._settings.poll_interval - (self._monotonic() - began))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=rest)
        finally:
            writing = list(self._writing.values())
            for task in writing:
                task.cancel()
            await asyncio.gather(*writing, return_exceptions=True)

    async def flush(self) -> None:
        """Wait for the writes in flight (they run beside the ticks)."""
        while self._writing:
            await asyncio.gather(*list(self._writing.values()), return_exceptions=True)

    def _snapshot(self) -> tuple[list[RequestView], dict[str, list[PodInfo]]]:
        requests: list[RequestView] = [v for v in _values(self._requests or {})]
        pods: dict[str, list[PodInfo]] = {}
        for pod in _values(self._pods or {}):
            pods.setdefault(pod.namespace, []).append(pod)
        return requests, pods

    async def tick(self) -> None:
        """One pass over every request (nothing before the indexes are populated)."""
        if not self.indexed.is_set():
            self._done()
            return
        requests, pods = self._snapshot()
        self._reconciler.begin_tick()
        plan = plan_tick(
            requests=requests,
            pods=pods,
            schedules=self._reconciler.schedules(),
            now=self._reconciler.now(),
            default_port=self._settings.agent_port,
            recheck_interval=self._settings.recheck_interval,
        )
        pod_uids = {
            t.endpoint: t.pod.uid
            for r in plan.requests
            for t in r.targets
            if t.endpoint in plan.polls and t.pod is not None
        }
        reports = await self._reconciler.fetch(plan.polls, pod_uids=pod_uids)
        await asyncio.gather(*(self._one(request, reports) for request in plan.requests))
        self._reconciler.end_tick()
        alive = {r.key for r in requests}
        for key in [k for k in self._memory if k not in alive]:
            del self._memory[key]
        for key in [k for k in self._resting if k not in alive]:
            del self._resting[key]
        self._metrics.keep_phases({r.uid for r in requests})
        self._done()

    def _done(self) -> None:
        self.ticks += 1
        self.last_tick_at = self._monotonic()
        self._metrics.loop_ticks.inc()

    def _base(self, request: RequestView) -> RequestView:
        """The request with the freshest known status: ours if the watch has not caught up."""
        memory = self._memory.get(request.key)
        if memory is None or memory.uid != request.uid:
            return request
        if request.resource_version == memory.base_version:
            return dataclasses.replace(request, status=memory.written)
        return request

    async def _one(self, plan: RequestPlan, reports: Reports) -> None:
        request = self._base(plan.request)
        if plan.invalid is not None:
            logger.warning("%s/%s: %s", request.namespace, request.name, plan.invalid)
            return
        if request.key in self._writing:
            # Its previous write is in flight: the next tick diffs against that write's result.
            self._reconciler.keep(plan)
            return
        if not any(t.due for t in plan.targets):
            # Nothing to ask: skip the request while neither it nor its targets changed.
            memory = self._memory.get(request.key)
            signature = (
                request.uid,
                request.resource_version,
                memory.written_at if memory is not None else None,
                tuple((t.name, t.endpoint, t.pod, t.waiting) for t in plan.targets),
            )
            if self._resting.get(request.key) == signature:
                self._reconciler.keep(plan)
                return
            self._resting[request.key] = signature
        else:
            self._resting.pop(request.key, None)
        plan = RequestPlan(request=request, targets=plan.targets)
        outcome = await self._reconciler.reconcile(plan, reports)
        self._metrics.set_phase(request.uid, outcome.status.get("phase"))
        memory = self._memory.get(request.key)
        decision = decide_write(
            live=request.status,
            new=outcome.status,
            last_write_at=memory.written_at
            if memory is not None and memory.uid == request.uid
            else None,
            now=self._monotonic(),
            status_interval=self._settings.status_interval,
        )
        if not decision.patch:
            return
        task = asyncio.create_task(
            self._write(request, outcome, decision.patch), name=f"write {request.name}"
        )
        self._writing[request.key] = task
        task.add_done_callback(lambda done: self._forget_write(request.key, done))

    def _forget_write(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._writing.get(key) is task:
            del self._writing[key]

    async def _write(self, request: RequestView, outcome: Outcome, patch: dict[str, Any]) -> None:
        now = self._monotonic()
        async with self._write_limit:
            try:
                written = await self._writes.patch_status(request.namespace, request.name, patch)
            except WriteFailed as error:
                self._metrics.api_writes.labels(kind="status", outcome=_outcome(error)).inc()
                logger.warning("%s; retried on a later tick", error)
                return
            self._metrics.api_writes.labels(kind="status", outcome="ok").inc()
            status = dict(written.get("status") or outcome.status)
            self._memory[request.key] = WriteMemory(
                uid=request.uid,
                base_version=request.resource_version,
                written=status,
                written_at=now,
            )
            ref = ObjectRef(namespace=request.namespace, name=request.name, uid=request.uid)
            for event in outcome.events:
                try:
                    await self._writes.post_event(
                        ref, type=event.type, reason=event.reason, message=event.message
                    )
                except WriteFailed as error:
                    self._metrics.api_writes.labels(kind="event", outcome=_outcome(error)).inc()
                    logger.warning("%s (event dropped)", error)
                else:
                    self._metrics.api_writes.labels(kind="event", outcome="ok").inc()


def _outcome(error: WriteFailed) -> str:
    return str(error.status) if error.status is not None else "error"
