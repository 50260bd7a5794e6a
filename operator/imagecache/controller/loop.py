"""The operator's reconcile loop: a keyed work queue, so a tick costs what changed.

What feeds the queue (`core.workqueue.WorkQueue`, keys are requests' ``(namespace, name)``):

* the watch: kopf's event handlers call `observe_request` / `observe_pod`; `core.observed`
  says which requests a change affects (a pod status update that changes nothing the operator
  reads affects none; the echo of our own status write affects none);
* the agents: `controller.polling.AgentPoller` polls each agent with requests in flight once
  per ``poll_interval``, stretched while the process is saturated (`controller.pace`: up to
  ``max_poll_stretch`` times, so watch events and writes go first; polling would otherwise
  take a core at 500 agents and feed on itself), each GET on its own with a deadline, and
  hands over only the requests whose image's state changed, or that waited for that answer;
  those whose progress alone moved (queue position, bytes) are due when their next progress
  write is allowed;
* due times: a recheck of a Cached target (``recheck_interval``), the end of a backoff, a
  progress-only status change waiting for ``status_interval`` (``queue_position_interval``
  while Queued: `core.writes.progress_interval`), a failed write's retry
  (exponential, capped, per key);
* the resync: every ``resync_interval`` the requests and pods are listed and compared, and
  what the watch missed (an object deleted while it was down) is forgotten.

A tick takes the ready keys and starts one task per key (a key is never processed twice at
once; marked again meanwhile, it is processed once more after). A resting request costs
nothing. The task plans the request (`core.planning`), reconciles it (`Reconciler`) and writes
what changed, diffed against the freshest status known: ours while the watch has not caught up
with our last write (`core.expectations`). Events are posted once, after their status write;
a repeat of a recent identical event raises its count instead (`core.correlation`).
A 404 on a write or on the GET that confirms a request before a re-PUT means gone: forgotten.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from imagecache.controller.errors import ControllerError
from imagecache.controller.kubeapi import KubernetesWrites, ObjectRef, WriteFailed
from imagecache.controller.metrics import OperatorMetrics
from imagecache.controller.pace import PollPace
from imagecache.controller.polling import AgentPoller
from imagecache.controller.reads import KubernetesReads, ReadFailed, scopes
from imagecache.controller.reconciling import Outcome, Reconciler
from imagecache.controller.settings import OperatorSettings
from imagecache.core.correlation import EventCorrelator
from imagecache.core.expectations import WriteExpectations, Written
from imagecache.core.observed import Observed, RequestKey
from imagecache.core.planning import RequestView, plan_request, request_view
from imagecache.core.status import Event
from imagecache.core.targets import pod_info
from imagecache.core.workqueue import WorkQueue
from imagecache.core.writes import decide_write, progress_interval

logger = logging.getLogger("imagecache.controller.loop")

WRITE_CONCURRENCY = 32
STUCK_FLOOR = 10.0
"""The loop is stuck when no tick completed for this long (or 5 poll intervals, if longer).
A tick never waits for an agent or the API, so this does not grow with their timeouts."""


def _values(index: Any) -> list[Any]:
    """Every value of a kopf index (a mapping of keys to stores of values)."""
    return [value for store in list(index.values()) for value in list(store)]


class ReconcileLoop:
    """One per operator; `run` until stopped; `tick` is one pass (tests call it too)."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        reconciler: Reconciler,
        writes: KubernetesWrites,
        metrics: OperatorMetrics,
        reads: KubernetesReads | None = None,
        pace: PollPace | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self.pace = pace or PollPace.from_settings(settings)
        metrics.loop_lag.set_function(lambda: self.pace.lag)
        metrics.busy.set_function(lambda: self.pace.busy)
        metrics.poll_stretch.set_function(lambda: self.pace.stretch)
        self._reconciler = reconciler
        self._writes = writes
        self._reads = reads
        self._metrics = metrics
        self._monotonic = monotonic
        self.observed = Observed()
        self.queue: WorkQueue[RequestKey] = WorkQueue(
            base_delay=settings.retry_backoff, max_delay=settings.retry_backoff_cap
        )
        self.expectations: WriteExpectations[RequestKey] = WriteExpectations()
        self._events = EventCorrelator()
        self.poller: AgentPoller[RequestKey] = AgentPoller(
            agents=reconciler.agents,
            poll_interval=settings.poll_interval,
            deadline=settings.request_timeout + 1.0,
            backoff=settings.retry_backoff,
            backoff_cap=settings.retry_backoff_cap,
            on_change=self._mark,
            on_progress=self._mark_progress,
            interval=lambda: self.pace.interval,
            monotonic=monotonic,
        )
        self._write_limit = asyncio.Semaphore(WRITE_CONCURRENCY)
        self._tasks: dict[RequestKey, asyncio.Task[None]] = {}
        self._resyncing: asyncio.Task[None] | None = None
        self._next_resync: float | None = None
        self._wake = asyncio.Event()
        self.indexed = asyncio.Event()
        self.started_at: float | None = None
        self.last_tick_at: float | None = None
        self.ticks = 0
        self.resyncs = 0

    # -- what the watch says ---------------------------------------------------------------------

    def attach(self, *, pods: Mapping[Any, Any]) -> None:
        """Take the pods kopf indexed before its first event handler call (the full list)."""
        if self.indexed.is_set():
            return
        for pod in _values(pods):
            self.observed.set_pod(pod)
        self.indexed.set()
        self._wake.set()

    def observe_request(self, event: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of an ImageCacheRequest (``None``: listed)."""
        view = request_view(body)
        key = view.key
        if event == "DELETED":
            self._reconciler.tombstone(view.uid)  # a task in flight must not PUT after this
            known = self.observed.request(key)
            if known is not None and known.uid == view.uid:
                self._forget(known)
            return
        old = self.observed.request(key)
        if old is not None and old.uid != view.uid:  # deleted and created again
            self._reconciler.tombstone(old.uid)
            self._forget(old)
            old = None
        if view.deleting:
            self._reconciler.tombstone(view.uid)
            self._forget(view)
            return
        self.observed.set_request(view)
        if old is None or self._changed(old, view):
            self._mark({key})
        self.expectations.caught_up(key, uid=view.uid, resource_version=view.resource_version)

    def _changed(self, old: RequestView, new: RequestView) -> bool:
        """Whether a new view of a request needs reconciling (not the echo of our own write)."""
        if (old.spec, old.generation) != (new.spec, new.generation):
            return True
        if old.status == new.status:
            return False
        key, uid, version = new.key, new.uid, new.resource_version
        if self.expectations.is_echo(key, uid=uid, resource_version=version):
            return False
        # Older than our last write: a late echo, nothing to do. Newer: someone else wrote.
        return self.expectations.satisfied(key, uid=uid, resource_version=version)

    def observe_pod(self, event: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a pod (``None``: listed)."""
        pod = pod_info(body)
        if event == "DELETED":
            affected = self.observed.drop_pod(pod.namespace, pod.name)
        else:
            affected = self.observed.set_pod(pod)
        self._mark(affected)

    def _mark(self, keys: set[RequestKey]) -> None:
        for key in keys:
            self.queue.add(key)
        if keys:
            self._wake.set()

    def _mark_progress(self, keys: set[RequestKey]) -> None:
        """Progress alone moved: reconcile when a progress write is allowed again (each key at
        most every `_progress_interval` after its last write), at once if never written."""
        now = self._monotonic()
        for key in keys:
            view = self.observed.request(key)
            if view is None:
                continue
            written = self.expectations.last(key, view.uid)
            interval = self._progress_interval(written.status if written else view.status)
            if written is not None and now - written.at < interval:
                self.queue.add_at(key, written.at + interval)
            else:
                self.queue.add(key)
        if self.queue.ready():
            self._wake.set()

    def _forget(self, view: RequestView) -> None:
        """The request is gone (deleted, being deleted, or found gone): forget everything."""
        known = self.observed.request(view.key)
        if known is not None and known.uid == view.uid:
            self.observed.drop_request(view.key)
        self.queue.discard(view.key)
        self.poller.unregister(view.key)
        self.expectations.forget(view.key)
        self._reconciler.forget(view.uid)
        self._events.forget_object(view.namespace, view.uid)
        self._metrics.set_phase(view.uid, None)

    # -- the loop --------------------------------------------------------------------------------

    def stuck(self) -> bool:
        """True when the loop runs but has not completed a tick for far longer than a tick."""
        if self.started_at is None:
            return False
        last = self.last_tick_at if self.last_tick_at is not None else self.started_at
        limit = max(STUCK_FLOOR, 5 * self._settings.poll_interval)
        return self._monotonic() - last > limit

    async def run(self, stop: asyncio.Event) -> None:
        """Tick whenever something is ready, at least every ``poll_interval``, until `stop`."""
        self.started_at = self._monotonic()
        pacing = asyncio.create_task(self.pace.run(), name="poll pace")
        try:
            while not stop.is_set():
                self._wake.clear()
                began = self._monotonic()
                try:
                    await self.tick()
                except Exception:
                    logger.exception("reconcile tick failed; the next tick tries again")
                self._metrics.tick_duration.observe(self._monotonic() - began)
                rest = self._rest()
                if rest > 0:
                    waiting = asyncio.ensure_future(self._wake.wait())
                    stopping = asyncio.ensure_future(stop.wait())
                    await asyncio.wait(
                        {waiting, stopping}, timeout=rest, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in (waiting, stopping):
                        task.cancel()
                else:
                    await asyncio.sleep(0)  # let the tasks just started run
        finally:
            pacing.cancel()
            await asyncio.gather(pacing, return_exceptions=True)
            await self.close()

    def _rest(self) -> float:
        """How long the loop may sleep: until the next due key, GET or resync (at most a poll)."""
        now = self._monotonic()
        if self.queue.ready():
            return 0.0
        times = [now + self._settings.poll_interval]
        for when in (self.queue.next_due(), self.poller.next_due(), self._next_resync):
            if when is not None:
                times.append(when)
        return max(0.0, min(times) - now)

    async def close(self) -> None:
        """Cancel the work in flight (key tasks, GETs, a resync)."""
        tasks = list(self._tasks.values())
        if self._resyncing is not None:
            tasks.append(self._resyncing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.poller.close()

    async def flush(self, *, rounds: int = 50) -> None:
        """Tick until nothing is ready or in flight at the current time (tests use it)."""
        for _ in range(rounds):
            await self.tick()
            pending = list(self._tasks.values())
            if self._resyncing is not None:
                pending.append(self._resyncing)
            if not pending and self.poller.in_flight == 0 and not self.queue.ready():
                due = self.poller.next_due()
                if due is None or due > self._monotonic():
                    return
            await asyncio.sleep(0)
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            else:
                await asyncio.sleep(0.001)

    async def tick(self) -> None:
        """Start what is due: agent GETs, one task per ready request, a resync."""
        if not self.indexed.is_set():
            self._done()
            return
        now = self._monotonic()
        self.poller.poll()
        for key in self.queue.take(now=now):
            self._tasks[key] = asyncio.create_task(self._process(key), name=f"reconcile {key}")
        if self._reads is not None:
            if self._next_resync is None:
                self._next_resync = now + self._settings.resync_interval
            elif now >= self._next_resync and self._resyncing is None:
                self._next_resync = now + self._settings.resync_interval
                self._resyncing = asyncio.create_task(self._resync(), name="resync")
        self._done()

    def _done(self) -> None:
        self.ticks += 1
        self.last_tick_at = self._monotonic()
        self._metrics.loop_ticks.inc()

    # -- one request -----------------------------------------------------------------------------

    async def _process(self, key: RequestKey) -> None:
        try:
            await self._reconcile(key)
        except ControllerError as error:
            delay = self.queue.add_rate_limited(key, now=self._monotonic())
            logger.warning("%s/%s: %s; retried in %.1fs", key[0], key[1], error, delay)
        except Exception:
            delay = self.queue.add_rate_limited(key, now=self._monotonic())
            logger.exception("%s/%s: reconcile failed; retried in %.1fs", key[0], key[1], delay)
        finally:
            self._tasks.pop(key, None)
            self.queue.done(key)
            if self.queue.ready():
                self._wake.set()

    async def _reconcile(self, key: RequestKey) -> None:
        view = self.observed.request(key)
        if view is None or view.deleting:
            return
        status = self.expectations.base(
            key, uid=view.uid, resource_version=view.resource_version, status=view.status
        )
        request = view if status is view.status else dataclasses.replace(view, status=status)
        pods = self.observed.pods_in(request.namespace)
        plan = plan_request(
            request,
            pods=list(pods.values()) if request.selector_form else (),
            schedules=self._reconciler.schedules(request),
            now=self._monotonic(),
            default_port=self._settings.agent_port,
            recheck_interval=self._settings.recheck_interval,
            by_name=pods,
        )
        if plan.invalid is not None:
            logger.warning("%s/%s: %s", request.namespace, request.name, plan.invalid)
            return
        outcome = await self._reconciler.reconcile(plan, self.poller.reports, confirm=self._confirm)
        if outcome.gone:
            logger.info("%s/%s is gone; forgotten", request.namespace, request.name)
            self._forget(request)
            return
        self.poller.register(key, outcome.interest)
        for endpoint in outcome.needs:
            self.poller.want(key, endpoint)
        if outcome.next_due is not None:
            self.queue.add_at(key, outcome.next_due)
        if outcome.needs:
            return
        self._metrics.observe_status(request.uid, outcome.status)
        written = self.expectations.last(key, request.uid)
        now = self._monotonic()
        interval = self._progress_interval(request.status)
        decision = decide_write(
            live=request.status,
            new=outcome.status,
            last_write_at=written.at if written is not None else None,
            now=now,
            interval=interval,
        )
        if decision.deferred and written is not None:
            self.queue.add_at(key, written.at + interval)
        if decision.patch:
            await self._write(request, outcome, decision.patch)

    def _progress_interval(self, status: Mapping[str, Any]) -> float:
        return progress_interval(
            status,
            status_interval=self._settings.status_interval,
            queue_position_interval=self._settings.queue_position_interval,
        )

    async def _confirm(self, request: RequestView) -> bool:
        """Does the request still exist (the same object)? Asked before re-queueing its image."""
        if self._reads is None:
            return True
        body = await self._reads.get_request(request.namespace, request.name)
        if body is None:
            return False
        return str((body.get("metadata") or {}).get("uid") or "") == request.uid

    async def _write(self, request: RequestView, outcome: Outcome, patch: dict[str, Any]) -> None:
        now = self._monotonic()
        async with self._write_limit:
            try:
                written = await self._writes.patch_status(request.namespace, request.name, patch)
            except WriteFailed as error:
                self._metrics.api_writes.labels(kind="status", outcome=_outcome(error)).inc()
                if error.status == 404:
                    logger.info("%s/%s is gone (404); forgotten", request.namespace, request.name)
                    self._forget(request)
                    return
                delay = self.queue.add_rate_limited(request.key, now=now)
                logger.warning("%s; retried in %.1fs", error, delay)
                return
            self.queue.forget(request.key)
            self._metrics.api_writes.labels(kind="status", outcome="ok").inc()
            meta = written.get("metadata") or {}
            self.expectations.wrote(
                request.key,
                Written(
                    uid=request.uid,
                    resource_version=str(meta.get("resourceVersion") or ""),
                    status=dict(written.get("status") or outcome.status),
                    at=now,
                ),
            )
            ref = ObjectRef(namespace=request.namespace, name=request.name, uid=request.uid)
            for event in outcome.events:
                await self._record(ref, event)

    async def _record(self, ref: ObjectRef, event: Event) -> None:
        """Post an event, or raise the count of the identical one posted lately."""
        key = (ref.namespace, ref.uid, event.type, event.reason, event.message)
        now = self._monotonic()
        correlation = self._events.correlate(key, now=now)
        try:
            if correlation.series is not None:
                try:
                    await self._writes.patch_event(
                        ref.namespace, correlation.series.name, count=correlation.count
                    )
                    self._events.posted(
                        key, name=correlation.series.name, count=correlation.count, now=now
                    )
                    self._metrics.api_writes.labels(kind="event", outcome="ok").inc()
                    return
                except WriteFailed as error:
                    if error.status != 404:
                        raise
                    self._events.forget(key)  # the Event expired: post a new one
            name = await self._writes.post_event(
                ref, type=event.type, reason=event.reason, message=event.message
            )
            self._events.posted(key, name=name, count=1, now=now)
        except WriteFailed as error:
            self._metrics.api_writes.labels(kind="event", outcome=_outcome(error)).inc()
            logger.warning("%s (event dropped)", error)
        else:
            self._metrics.api_writes.labels(kind="event", outcome="ok").inc()

    # -- resync ----------------------------------------------------------------------------------

    async def _resync(self) -> None:
        """List requests and pods; forget what is gone, reconcile what changed."""
        assert self._reads is not None
        try:
            await self.resync()
        except (ReadFailed, ControllerError) as error:
            logger.warning("resync failed: %s; tried again after resync_interval", error)
        except Exception:
            logger.exception("resync failed; tried again after resync_interval")
        finally:
            self._resyncing = None

    async def resync(self) -> None:
        """One resync now (`run` does it every ``resync_interval``)."""
        assert self._reads is not None
        affected: set[RequestKey] = set()
        for scope in scopes(self._settings.namespaces):
            since = self.observed.pod_epoch
            pods = await self._reads.list_pods(scope)
            affected |= self.observed.replace_pods(
                (pod_info(item) for item in pods.items),
                since=since,
                namespaces=[scope] if scope else [],
            )
            requests = await self._reads.list_requests(scope)
            views = [request_view(item) for item in requests.items]
            for view in [v for v in views if v.deleting]:
                self._reconciler.tombstone(view.uid)
            resynced = self.observed.replace_requests(
                [v for v in views if not v.deleting],
                list_version=requests.resource_version,
                namespaces=[scope] if scope else [],
            )
            for view in resynced.gone:
                logger.info("%s/%s is gone (resync); forgotten", view.namespace, view.name)
                self._forget(view)
            affected |= resynced.changed
        self.resyncs += 1
        self._mark({key for key in affected if self.observed.request(key) is not None})


def _outcome(error: WriteFailed) -> str:
    return str(error.status) if error.status is not None else "error"
