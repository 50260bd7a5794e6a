"""What the loop does with one request, and eviction on deletion.

`Reconciler.reconcile` turns one `RequestPlan` and the latest report of each of its agents
(`AgentReport`, fetched by `controller.polling.AgentPoller`) into the request's new status and
events (SPEC §4.1 items 1-5, 8), (re-)queueing the image with ``PUT`` where the agent lacks it.
A target that needs a newer report than there is says so (`Outcome.needs`): the loop asks that
agent and reconciles the request again when the answer arrives. `Outcome.next_due` is when the
request needs looking at again without any change (a recheck, the end of a backoff).

In memory it keeps only per-target schedules (`TargetMemory`: last state, when we queued,
backoff); the truth is rebuilt from the object's live status and the agents after a restart.
It never sends a ``PUT`` for a request being deleted: the finalizer marks it (`tombstone`)
before it evicts, and the mark is checked right before each ``PUT``; a re-``PUT`` after an
eviction on the agent is sent only once `confirm` has seen the request still exist.

`Reconciler.evict` sends ``DELETE /v2/cache/<image>`` to every current target at once for
``evictOnDelete`` (item 6) and says when to give up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imagecache.controller.agents import AgentPort
from imagecache.controller.errors import (
    AgentError,
    AgentProtocolError,
    AgentUnauthorized,
    CredentialUnavailable,
)
from imagecache.controller.settings import OperatorSettings
from imagecache.core.backoff import backoff_delay
from imagecache.core.fanout import UPSTREAM, Observed, TargetView, fanout_spec, plan_fanout
from imagecache.core.planning import (
    PlannedTarget,
    RequestPlan,
    RequestView,
    TargetSchedule,
    plan_request,
)
from imagecache.core.status import (
    Event,
    ResolvedTarget,
    TargetState,
    build_status,
    find_image,
    pending_state,
    reported_source,
    state_from_image,
    state_from_put,
    status_events,
    unauthorized_state,
)
from imagecache.core.targets import PodInfo, is_replaced, target_action
from imagecache.core.wire import CacheListing

_LAST_SEEN: dict[str, Observed] = {"Cached": "cached", "Queued": "filling", "Caching": "filling"}
"""A target without a usable answer of its agent, for the fan-out plan: as its last phase."""


@dataclass
class TargetMemory:
    """In-memory schedule of one target (request uid, pod uid); never the source of truth."""

    state: TargetState | None = None
    put_at: float | None = None
    failures: int = 0
    not_before: float = 0.0
    checked_at: float = float("-inf")
    endpoint: str | None = None
    wanted_at: float = float("inf")
    """When a new target asked for a fresh answer (any answer completed after it will do)."""
    source: str | None = None
    """What the last PUT named as the source: a peer's endpoint, or `UPSTREAM` (fan-out)."""

    def schedule(self) -> TargetSchedule:
        """The planner's view of this memory."""
        return TargetSchedule(
            state=self.state, not_before=self.not_before, checked_at=self.checked_at
        )


@dataclass(frozen=True)
class AgentReport:
    """One agent's latest answer to ``GET /v2/cache`` (or the error), and when it was asked."""

    answer: CacheListing | AgentError
    started_at: float
    completed_at: float


@dataclass(frozen=True)
class Interest:
    """One target's agent and image, and whether it is still in flight there (polled)."""

    endpoint: str
    image: str
    active: bool
    pod_uid: str | None = None
    """The pod behind the agent (its per-pod credential)."""


@dataclass(frozen=True)
class Outcome:
    """The new status and the events to post once it is written, and what the loop must do.

    `needs`: agents whose next answer the request waits for (nothing is written meanwhile);
    `next_due`: when to look again without any change (None: only on a change);
    `interest`: the request's targets, for the poller; `gone`: the request no longer exists.
    """

    status: dict[str, Any]
    events: list[Event]
    needs: frozenset[str] = frozenset()
    next_due: float | None = None
    interest: tuple[Interest, ...] = ()
    gone: bool = False


@dataclass(frozen=True)
class EvictOutcome:
    """Eviction finished (`done`, maybe given up with `events`), or retry after `retry_in`."""

    done: bool
    events: list[Event]
    retry_in: float = 0.0
    error: str = ""


Confirm = Callable[[RequestView], Awaitable[bool]]
"""Asks the API whether the request still exists (a GET): False means gone."""

TOMBSTONES = 65_536
"""How many deleted requests' uids are remembered (a PUT for any of them is never sent)."""


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


def _settled(state: TargetState | None) -> bool:
    return state is not None and (
        state.phase == "Cached" or (state.phase == "Failed" and state.reason != "Unauthorized")
    )


class _Gone(Exception):
    """The request was found gone while reconciling it."""


class _NoPeerCredential(Exception):
    """The peer-read credential for a fan-out source cannot be had (send the plain PUT)."""


class Reconciler:
    """Reconciles planned requests against agents; one per operator."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        agents: AgentPort,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_interval: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        self._poll_interval = poll_interval or (lambda: settings.poll_interval)
        """The poll interval now (the loop's `controller.pace.PollPace` stretches it)."""
        self._agents = agents
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._targets: dict[str, dict[str, TargetMemory]] = {}
        self._serving: dict[str, Counter[str]] = {}
        """Per request uid: the transfers its targets take from each peer (fan-out loads)."""
        self._serving_total: Counter[str] = Counter()
        """The sum of `_serving`: kept as it changes, so a plan never scans every request."""
        self._evicted: dict[str, set[str]] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self.puts_refused = 0

    def now(self) -> float:
        """The reconciler's monotonic clock."""
        return self._monotonic()

    @property
    def agents(self) -> AgentPort:
        """The agent port it talks through (the loop's poller shares it)."""
        return self._agents

    def schedules(self, request: RequestView) -> dict[tuple[str, str], TargetSchedule]:
        """The schedules of one request's targets, for the planner."""
        memos = self._targets.get(request.uid, {})
        return {(request.uid, pod_uid): memo.schedule() for pod_uid, memo in memos.items()}

    def forget(self, uid: str) -> None:
        """The request is gone: drop its targets' schedules."""
        self._targets.pop(uid, None)
        self._account(uid)

    def tombstone(self, uid: str) -> None:
        """The request is being deleted: never ``PUT`` its image again."""
        self._tombstones[uid] = None
        self._tombstones.move_to_end(uid)
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)
        self.forget(uid)

    def deleted(self, uid: str) -> bool:
        """True once `tombstone` was called for this request."""
        return uid in self._tombstones

    async def reconcile(
        self,
        plan: RequestPlan,
        reports: Mapping[str, AgentReport],
        *,
        confirm: Confirm | None = None,
    ) -> Outcome:
        """The request's new status (against `live`) and its events; PUTs where needed."""
        try:
            return await self._reconcile(plan, reports, confirm)
        finally:
            self._account(plan.request.uid)

    def _account(self, uid: str) -> None:
        """Bring the request's share of the peers' loads up to date with its memories."""
        serving: Counter[str] = Counter()
        for memo in self._targets.get(uid, {}).values():
            filling = memo.state is not None and memo.state.phase in ("Queued", "Caching")
            if filling and memo.source not in (None, UPSTREAM):
                serving[str(memo.source)] += 1
        before = self._serving.pop(uid, None)
        if serving:
            self._serving[uid] = serving
        if not serving and not before:  # nearly every request: filled from the upstream
            return
        if before:
            self._serving_total.subtract(before)
        self._serving_total.update(serving)
        for peer in [p for p, n in self._serving_total.items() if n <= 0]:
            del self._serving_total[peer]

    async def _reconcile(
        self, plan: RequestPlan, reports: Mapping[str, AgentReport], confirm: Confirm | None
    ) -> Outcome:
        request = plan.request
        live = request.status
        previous = _previous_entries(live, selector_form=request.selector_form)
        resolved: list[ResolvedTarget] = []
        recaching: list[Event] = []
        needs: set[str] = set()
        interest: list[Interest] = []
        now = self._monotonic()
        memos = self._targets.setdefault(request.uid, {})
        kept_pods: set[str] = set()
        image = str(request.spec.get("image") or "")
        sources = self._fanout(plan, previous, reports, memos)  # fleet fill: who fills from whom
        peer_uids = {t.endpoint: t.pod.uid for t in plan.targets if t.pod and t.endpoint}
        waiting_for_peer = False
        for target in plan.targets:
            if target.waiting is not None or target.pod is None or target.endpoint is None:
                waiting = target.waiting or pending_state(reason="PodNotFound", message="")
                resolved.append(ResolvedTarget(target.name, target.pod, waiting))
                continue
            kept_pods.add(target.pod.uid)
            memo = memos.setdefault(target.pod.uid, TargetMemory())
            if memo.endpoint != target.endpoint:
                memo.endpoint = target.endpoint
                memo.checked_at = float("-inf")
            report = reports.get(target.endpoint)
            try:
                outcome = await self._target(
                    request,
                    target,
                    memo,
                    previous.get(target.name),
                    report,
                    now,
                    confirm,
                    sources,
                    peer_uids,
                )
            except _Gone:
                return Outcome(status=dict(live), events=[], gone=True)
            if outcome is None:
                needs.add(target.endpoint)
                interest.append(Interest(target.endpoint, image, True, target.pod.uid))
                continue  # nothing is written until its agent answers
            state, requeued = outcome
            waiting_for_peer = waiting_for_peer or state.reason == "WaitingForPeer"
            if requeued:
                recaching.append(
                    Event("Normal", "Recaching", f"image gone from {target.name}; re-queued")
                )
            interest.append(Interest(target.endpoint, image, not _settled(state), target.pod.uid))
            resolved.append(ResolvedTarget(target.name, target.pod, state))
        for pod_uid in [uid for uid in memos if uid not in kept_pods]:
            del memos[pod_uid]
        next_due = self._next_due(memos.values())
        if waiting_for_peer:  # fan-out: planned again once a poll may have freed a peer
            retry = now + self._poll_interval()
            next_due = retry if next_due is None else min(next_due, retry)
        if needs:
            return Outcome(
                status=dict(live),
                events=[],
                needs=frozenset(needs),
                next_due=next_due,
                interest=tuple(interest),
            )
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
        return Outcome(status=new, events=events, next_due=next_due, interest=tuple(interest))

    def _next_due(self, memos: Iterable[TargetMemory]) -> float | None:
        """The earliest recheck or end of a backoff among the targets."""
        times: list[float] = []
        for memo in memos:
            if memo.failures:
                times.append(memo.not_before)
            elif _settled(memo.state):
                times.append(memo.checked_at + self._settings.recheck_interval)
        return min(times) if times else None

    def _needs_report(self, memo: TargetMemory, report: AgentReport | None, now: float) -> bool:
        """Whether the target must wait for a newer answer of its agent than `report`."""
        if report is None:
            return True
        if memo.state is None:
            # A new target: an answer from a few polls ago is good enough to start from, and
            # so is any answer that completed after it asked (however late it is looked at).
            recent = report.completed_at >= now - 2 * self._poll_interval()
            return not (recent or report.completed_at > memo.wanted_at)
        if memo.failures or _settled(memo.state):
            # A recheck or a retry: only an answer newer than the last look counts.
            return report.completed_at <= memo.checked_at
        return False

    async def _target(
        self,
        request: RequestView,
        target: PlannedTarget,
        memo: TargetMemory,
        before: Mapping[str, Any] | None,
        report: AgentReport | None,
        now: float,
        confirm: Confirm | None,
        sources: Mapping[str, str | None],
        peer_uids: Mapping[str, str],
    ) -> tuple[TargetState, bool] | None:
        pod, endpoint = target.pod, target.endpoint
        assert pod is not None and endpoint is not None
        if before is not None and is_replaced(recorded=before, pod=pod):
            before = None
        kept = memo.state or _recorded_state(before)
        if not target.due and memo.state is not None:
            return memo.state, False
        if self._needs_report(memo, report, now):
            memo.wanted_at = min(memo.wanted_at, now)
            return None
        assert report is not None
        answer = report.answer
        memo.checked_at = max(report.completed_at, memo.checked_at)
        if isinstance(answer, AgentError):
            return self._contact_failed(memo, kept, answer, now), False
        image = str(request.spec["image"])
        entry = find_image(report=answer, image_id=image)
        previous_phase = kept.phase if kept is not None else None
        action = target_action(
            agent_state=entry.get("state", "absent"),
            previous_phase=previous_phase,
            put_pending=memo.put_at is not None and memo.put_at >= report.started_at,
            recheck_due=memo.state is not None,
        )
        requeued = False
        if action == "report":
            state = state_from_image(entry=entry, pod_name=pod.name)
        elif action == "keep" and kept is not None:
            state = kept
        elif target.name not in sources:  # fan-out: no free source yet, planned again soon
            state = pending_state(
                reason="WaitingForPeer",
                message="waiting for a target holding the image to have a free slot (fan-out)",
            )
        else:
            requeued = previous_phase == "Cached"
            if requeued and confirm is not None and not await confirm(request):
                raise _Gone(request.key)
            peer = sources[target.name]
            try:
                code = await self._put(request, endpoint, image, pod.uid, peer, peer_uids)
                if code == 400 and peer is not None:
                    peer = None  # the agent refuses the hint: the plain PUT
                    code = await self._put(request, endpoint, image, pod.uid, None, peer_uids)
            except _NoPeerCredential:
                peer = None  # no credential for the peer: the plain PUT
                code = await self._put(request, endpoint, image, pod.uid, None, peer_uids)
            except AgentError as error:
                return self._contact_failed(memo, kept, error, now), False
            if code is None:
                raise _Gone(request.key)
            memo.source = peer or UPSTREAM
            state = dataclasses.replace(
                state_from_put(status_code=code, pod_name=pod.name), source=memo.source
            )
            if code == 202:
                memo.put_at = self._monotonic()
        state = dataclasses.replace(state, reachable=True, unreachable="")
        memo.failures = 0
        memo.not_before = 0.0
        memo.state = state
        return state, requeued

    async def _put(
        self,
        request: RequestView,
        endpoint: str,
        image: str,
        pod_uid: str,
        peer: str | None,
        peer_uids: Mapping[str, str],
    ) -> int | None:
        """``PUT`` the image unless the request is being deleted (checked at the last moment:
        None), naming `peer` with its peer-read credential when there is one."""
        if request.deleting or self.deleted(request.uid):
            self.puts_refused += 1
            return None
        try:
            return await self._agents.put_image(
                endpoint,
                image,
                pod_uid=pod_uid,
                source=peer,
                source_pod_uid=peer_uids.get(peer or ""),
            )
        except CredentialUnavailable as error:
            if peer is not None and error.endpoint == peer:
                raise _NoPeerCredential(peer) from error
            raise

    def _fanout(
        self,
        plan: RequestPlan,
        previous: Mapping[str, Any],
        reports: Mapping[str, AgentReport],
        memos: Mapping[str, TargetMemory],
    ) -> dict[str, str | None]:
        """Per target to ``PUT`` now: the peer to fill from, or None for the upstream
        (`core.fanout`)."""
        request = plan.request
        image = str(request.spec.get("image") or "")
        views: list[TargetView] = []
        for target in plan.targets:
            if target.pod is None or target.endpoint is None or target.waiting is not None:
                continue
            memo = memos.get(target.pod.uid) or TargetMemory()
            kept = memo.state or _recorded_state(previous.get(target.name))
            report = reports.get(target.endpoint)
            answer = report.answer if report is not None else None
            observed: Observed = "idle"
            source = memo.source
            put_pending = (
                report is not None and memo.put_at is not None and memo.put_at >= report.started_at
            )
            if put_pending:  # queued by us after this answer was taken: it fills
                observed = "filling"
            elif isinstance(answer, Mapping):
                assert report is not None
                entry = find_image(report=answer, image_id=image)
                agent_state = entry.get("state", "absent")
                if agent_state == "cached":
                    observed = "cached"
                elif agent_state in ("queued", "caching"):
                    observed = "filling"
                    source = reported_source(entry.get("source")) or source
                elif (target.due or memo.state is None) and target_action(
                    agent_state=agent_state,
                    previous_phase=kept.phase if kept is not None else None,
                    put_pending=False,
                    recheck_due=memo.state is not None,
                ) == "put":
                    observed = "to_fill"
            elif kept is not None:  # no usable answer: as last seen
                observed = _LAST_SEEN.get(kept.phase, "idle")
            views.append(TargetView(target.name, target.endpoint, observed, source))
        if not any(view.observed == "to_fill" for view in views):
            return {}
        loads = self._loads(request.uid, [view.endpoint for view in views])
        return plan_fanout(targets=views, spec=fanout_spec(request.spec), loads=loads)

    def _loads(self, uid: str, endpoints: Iterable[str]) -> dict[str, int]:
        """Transfers each of these peers serves for the other requests."""
        own = self._serving.get(uid, Counter())
        loads = {e: self._serving_total[e] - own[e] for e in endpoints if e in self._serving_total}
        return {endpoint: load for endpoint, load in loads.items() if load > 0}

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
        invalid = isinstance(error, AgentProtocolError)
        reason = "AgentInvalidAnswer" if invalid else "AgentUnreachable"
        if isinstance(error, AgentUnauthorized):
            state = dataclasses.replace(
                unauthorized_state(status_code=error.status or 401), reachable=True
            )
        elif kept is not None and kept.phase == "Cached":
            state = dataclasses.replace(
                kept, reachable=False, unreachable=str(error), unreachable_reason=reason
            )
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
                unreachable_reason=reason,
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
        self.tombstone(request.uid)  # before any DELETE: no PUT of this request from now on
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
