"""What the loop does with one planned request, and eviction on deletion.

`Reconciler.fetch` asks each planned agent once (``GET /v2/cache``), concurrently.
`Reconciler.reconcile` turns one `RequestPlan` and those reports into the request's new status
and events (SPEC §4.1 items 1-5, 8), (re-)queueing the image with ``PUT`` where the agent lacks
it. In memory it keeps only per-target schedules (`TargetMemory`: last state, when we queued,
backoff); the truth is rebuilt from the object's live status and the agents after a restart.

`Reconciler.evict` sends ``DELETE /v2/cache/<image>`` to every current target at once for
``evictOnDelete`` (item 6) and says when to give up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagecache.controller.agents import AgentPort
from imagecache.controller.errors import (
    AgentError,
    AgentUnauthorized,
    AgentUnreachable,
    CredentialUnavailable,
)
from imagecache.controller.settings import OperatorSettings
from imagecache.core.backoff import backoff_delay
from imagecache.core.planning import (
    PlannedTarget,
    RequestPlan,
    RequestView,
    TargetSchedule,
    plan_request,
    target_key,
)
from imagecache.core.status import (
    Event,
    ResolvedTarget,
    TargetState,
    build_status,
    find_image,
    pending_state,
    state_from_image,
    state_from_put,
    status_events,
    unauthorized_state,
)
from imagecache.core.targets import PodInfo, is_replaced, target_action
from imagecache.core.wire import CacheListing


@dataclass
class TargetMemory:
    """In-memory schedule of one target (request uid, pod uid); never the source of truth."""

    state: TargetState | None = None
    put_at: float | None = None
    failures: int = 0
    not_before: float = 0.0
    checked_at: float = 0.0
    seen_tick: int = 0

    def schedule(self) -> TargetSchedule:
        """The planner's view of this memory."""
        return TargetSchedule(
            state=self.state, not_before=self.not_before, checked_at=self.checked_at
        )


@dataclass(frozen=True)
class Reports:
    """This tick's agent reports by endpoint (a report or the error), and when the GETs began."""

    started_at: float
    by_endpoint: Mapping[str, CacheListing | AgentError] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The new status and the events to post once it is written."""

    status: dict[str, Any]
    events: list[Event]


@dataclass(frozen=True)
class EvictOutcome:
    """Eviction finished (`done`, maybe given up with `events`), or retry after `retry_in`."""

    done: bool
    events: list[Event]
    retry_in: float = 0.0
    error: str = ""


def _previous_entries(
    status: Mapping[str, Any], *, selector_form: bool
) -> dict[str, dict[str, Any]]:
    """The targets recorded in status, by pod name, each with its phase/reason/message."""
    if selector_form:
        return {str(e["pod"]): dict(e) for e in status.get("targets") or [] if e.get("pod")}
    target = status.get("target") or {}
    if not target.get("pod"):
        return {}
    entry = dict(target)
    entry.update({k: status.get(k) for k in ("phase", "reason", "message")})
    return {str(target["pod"]): entry}


def _recorded_state(before: Mapping[str, Any] | None) -> TargetState | None:
    if not before or not before.get("phase"):
        return None
    return TargetState(
        phase=before["phase"],
        reason=str(before.get("reason") or before["phase"]),
        message=str(before.get("message") or ""),
        percent=before.get("percent"),
    )


class Reconciler:
    """Reconciles planned requests against agents; one per operator."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        agents: AgentPort,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._agents = agents
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._targets: dict[tuple[str, str], TargetMemory] = {}
        self._evicted: dict[str, set[str]] = {}
        self._tick = 0
        self.gets: dict[str, int] = {}

    def now(self) -> float:
        """The reconciler's monotonic clock."""
        return self._monotonic()

    def schedules(self) -> dict[tuple[str, str], TargetSchedule]:
        """Every target's schedule, for the planner."""
        return {key: memory.schedule() for key, memory in self._targets.items()}

    def begin_tick(self) -> None:
        """Mark a new tick; targets not seen by its end are forgotten (`end_tick`)."""
        self._tick += 1

    def end_tick(self) -> None:
        """Forget the schedules of targets no request planned this tick (pods or requests gone)."""
        for key in [k for k, m in self._targets.items() if m.seen_tick != self._tick]:
            del self._targets[key]

    def keep(self, plan: RequestPlan) -> None:
        """A request skipped this tick: keep its targets' schedules (see `end_tick`)."""
        for target in plan.targets:
            if target.pod is not None and target.endpoint is not None:
                memo = self._targets.get(target_key(plan.request, target.pod))
                if memo is not None:
                    memo.seen_tick = self._tick

    async def fetch(
        self, endpoints: Iterable[str], *, pod_uids: Mapping[str, str] | None = None
    ) -> Reports:
        """``GET /v2/cache`` from each endpoint once, concurrently (`pod_uids`: the pod behind
        each endpoint, for its per-pod credential)."""
        started = self._monotonic()
        chosen = sorted(set(endpoints))

        async def one(endpoint: str) -> CacheListing | AgentError:
            self.gets[endpoint] = self.gets.get(endpoint, 0) + 1
            try:
                return await self._agents.cache_report(
                    endpoint, pod_uid=(pod_uids or {}).get(endpoint)
                )
            except AgentError as error:
                return error

        answers = await asyncio.gather(*(one(endpoint) for endpoint in chosen))
        return Reports(started_at=started, by_endpoint=dict(zip(chosen, answers, strict=True)))

    async def reconcile(self, plan: RequestPlan, reports: Reports) -> Outcome:
        """The request's new status (against `live`) and its events; PUTs where needed."""
        request = plan.request
        live = request.status
        previous = _previous_entries(live, selector_form=request.selector_form)
        resolved: list[ResolvedTarget] = []
        recaching: list[Event] = []
        for target in plan.targets:
            if target.waiting is not None or target.pod is None or target.endpoint is None:
                waiting = target.waiting or pending_state(reason="PodNotFound", message="")
                resolved.append(ResolvedTarget(target.name, target.pod, waiting))
                continue
            state, requeued = await self._target(
                request, target, previous.get(target.name), reports
            )
            if requeued:
                recaching.append(
                    Event("Normal", "Recaching", f"image gone from {target.name}; re-queued")
                )
            resolved.append(ResolvedTarget(target.name, target.pod, state))
        new = build_status(
            previous=live,
            targets=resolved,
            selector_form=request.selector_form,
            generation=request.generation,
            now=self._wallclock(),
        )
        events = status_events(previous=live, current=new)
        if recaching:
            events = recaching + [e for e in events if e.reason != "Queued"]
        return Outcome(status=new, events=events)

    async def _target(
        self,
        request: RequestView,
        target: PlannedTarget,
        before: Mapping[str, Any] | None,
        reports: Reports,
    ) -> tuple[TargetState, bool]:
        pod, endpoint = target.pod, target.endpoint
        assert pod is not None and endpoint is not None
        memo = self._targets.setdefault(target_key(request, pod), TargetMemory())
        memo.seen_tick = self._tick
        if before is not None and is_replaced(recorded=before, pod=pod):
            before = None
        kept = memo.state or _recorded_state(before)
        if not target.due and memo.state is not None:
            return memo.state, False
        now = self._monotonic()
        answer = reports.by_endpoint.get(endpoint)
        if answer is None:
            answer = AgentUnreachable("not asked this tick", endpoint=endpoint)
        if isinstance(answer, AgentError):
            return self._contact_failed(memo, kept, answer, now), False
        image = str(request.spec["image"])
        entry = find_image(report=answer, image_id=image)
        previous_phase = kept.phase if kept is not None else None
        action = target_action(
            agent_state=entry.get("state", "absent"),
            previous_phase=previous_phase,
            put_pending=memo.put_at is not None and memo.put_at >= reports.started_at,
            recheck_due=memo.state is not None,
        )
        requeued = False
        if action == "report":
            state = state_from_image(entry=entry, pod_name=pod.name)
        elif action == "keep" and kept is not None:
            state = kept
        else:
            requeued = previous_phase == "Cached"
            try:
                code = await self._agents.put_image(endpoint, image, pod_uid=pod.uid)
            except AgentError as error:
                return self._contact_failed(memo, kept, error, now), False
            state = state_from_put(status_code=code, pod_name=pod.name)
            if code == 202:
                memo.put_at = self._monotonic()
        state = dataclasses.replace(state, reachable=True, unreachable="")
        memo.failures = 0
        memo.not_before = 0.0
        if state.phase in ("Cached", "Failed"):
            memo.checked_at = now
        memo.state = state
        return state, requeued

    def _contact_failed(
        self, memo: TargetMemory, kept: TargetState | None, error: AgentError, now: float
    ) -> TargetState:
        """Back off; a Cached target stays Cached (the outage shows as AgentReachable=False)."""
        memo.failures += 1
        memo.not_before = now + backoff_delay(
            failures=memo.failures,
            base=self._settings.retry_backoff,
            cap=self._settings.retry_backoff_cap,
        )
        if isinstance(error, AgentUnauthorized):
            state = dataclasses.replace(
                unauthorized_state(status_code=error.status or 401), reachable=True
            )
        elif kept is not None and kept.phase == "Cached":
            state = dataclasses.replace(kept, reachable=False, unreachable=str(error))
        elif isinstance(error, CredentialUnavailable):
            state = dataclasses.replace(
                pending_state(
                    reason="CredentialUnavailable", message=f"no credential for the agent: {error}"
                ),
                reachable=False,
                unreachable=str(error),
            )
        else:
            state = dataclasses.replace(
                pending_state(reason="AgentUnreachable", message=f"agent unreachable: {error}"),
                reachable=False,
                unreachable=str(error),
            )
        memo.state = state
        return state

    async def evict(
        self,
        *,
        request: RequestView,
        pods: Sequence[PodInfo],
        deletion_started: datetime | None,
        attempt: int = 0,
    ) -> EvictOutcome:
        """``DELETE`` the image from every Ready target at once; give up after evict_timeout."""
        image = str(request.spec.get("image") or "")
        evicted = self._evicted.setdefault(request.uid, set())
        plan = plan_request(
            request,
            pods=pods,
            schedules={},
            now=self._monotonic(),
            default_port=self._settings.agent_port,
            recheck_interval=self._settings.recheck_interval,
        )
        chosen = [
            t
            for t in plan.targets
            if t.endpoint is not None and t.pod is not None and t.pod.uid not in evicted
        ]
        started = deletion_started or self._wallclock()
        remaining = self._settings.evict_timeout - (self._wallclock() - started).total_seconds()

        async def one(target: PlannedTarget) -> None:
            assert target.endpoint is not None and target.pod is not None
            await self._agents.delete_image(target.endpoint, image, pod_uid=target.pod.uid)
            evicted.add(target.pod.uid)

        failures: list[str] = []
        out_of_time = False
        if chosen:
            tasks = {asyncio.ensure_future(one(t)): t for t in chosen}
            done, pending = await asyncio.wait(tasks, timeout=max(remaining, 0.0) or None)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            out_of_time = bool(pending)
            failures = [f"{tasks[task].name}: no answer in time" for task in pending]
            failures += [
                f"{tasks[task].name}: {task.exception()}"
                for task in done
                if task.exception() is not None
            ]
        if not failures:
            self._evicted.pop(request.uid, None)
            return EvictOutcome(done=True, events=[])
        waited = (self._wallclock() - started).total_seconds()
        if out_of_time or waited >= self._settings.evict_timeout:
            self._evicted.pop(request.uid, None)
            message = f"gave up evicting {image} after {int(waited)}s: " + "; ".join(failures)
            return EvictOutcome(done=True, events=[Event("Warning", "EvictionAbandoned", message)])
        delay = backoff_delay(
            failures=attempt + 1,
            base=self._settings.retry_backoff,
            cap=self._settings.retry_backoff_cap,
        )
        delay = max(0.1, min(delay, self._settings.evict_timeout - waited))
        return EvictOutcome(done=False, events=[], retry_in=delay, error="; ".join(failures))
