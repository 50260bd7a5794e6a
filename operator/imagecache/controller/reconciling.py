"""One reconciliation pass over one ImageCacheRequest, and its eviction on deletion.

`Reconciler.reconcile` is level-triggered (SPEC §4.1 items 1-5, 8): from the live pods (kopf's
index), the previous status and the agents' shared reports it computes the whole new status and
the events to post, (re-)queueing the image where the agent lacks it. It keeps only schedules in
memory (`RequestMemory`: when we last queued, backoff, last recheck); the truth is rebuilt from
the object's status and the agents after a restart.

`Reconciler.evict` sends ``DELETE /v2/cache/<image>`` to each current target for
``evictOnDelete`` (item 6).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagecache.controller.agents import AgentPort
from imagecache.controller.errors import AgentError, AgentUnauthorized, RequestSpecError
from imagecache.controller.polling import AgentPollers
from imagecache.controller.settings import OperatorSettings
from imagecache.core.backoff import backoff_delay
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
from imagecache.core.targets import (
    PodInfo,
    agent_endpoint,
    agent_port,
    is_replaced,
    pod_readiness,
    select_targets,
    target_action,
)


@dataclass
class TargetMemory:
    """In-memory schedule of one target (by pod uid); never the source of truth."""

    pod_uid: str
    state: TargetState | None = None
    put_at: float | None = None
    failures: int = 0
    not_before: float = 0.0
    checked_at: float = 0.0


@dataclass
class RequestMemory:
    """In-memory schedules of one request: per target, and what was last written."""

    targets: dict[str, TargetMemory] = field(default_factory=dict)
    written: dict[str, Any] | None = None
    generation: int = 0
    quiet_until: float = 0.0
    wakeup: asyncio.Event | None = None
    stopped: Any = None
    gone: bool = False
    evicted: set[str] = field(default_factory=set)
    evict_failures: int = 0


@dataclass(frozen=True)
class Outcome:
    """The new status and the events to post."""

    status: dict[str, Any]
    events: list[Event]


@dataclass(frozen=True)
class EvictOutcome:
    """Eviction finished (``done``), or must be retried after ``retry_in`` seconds."""

    done: bool
    events: list[Event]
    retry_in: float = 0.0
    error: AgentError | None = None


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


class Reconciler:
    """Reconciles requests against pods and agents; one per operator."""

    def now(self) -> float:
        """The reconciler's monotonic clock."""
        return self._monotonic()

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        agents: AgentPort,
        pollers: AgentPollers,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._agents = agents
        self._pollers = pollers
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._pruned_at = monotonic()

    def resolve(
        self, *, spec: Mapping[str, Any], pods: Sequence[PodInfo]
    ) -> list[tuple[str, PodInfo | None]]:
        """The request's targets: (pod name, pod or None) -- ready or not for the single form."""
        if "podSelector" in spec and spec["podSelector"] is not None:
            return [
                (pod.name, pod) for pod in select_targets(pods=pods, selector=spec["podSelector"])
            ]
        name = spec.get("pod")
        if not name:
            raise RequestSpecError("spec has neither pod nor podSelector")
        pod = next((p for p in pods if p.name == name), None)
        return [(str(name), pod)]

    async def reconcile(
        self,
        *,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        generation: int,
        pods: Sequence[PodInfo],
        memory: RequestMemory,
    ) -> Outcome:
        """Compute the request's new status (and events), queueing the image where needed."""
        image = spec.get("image")
        if not image:
            raise RequestSpecError("spec.image is missing")
        self._prune_pollers()
        selector_form = spec.get("podSelector") is not None
        previous = _previous_entries(status, selector_form=selector_form)
        resolved: list[ResolvedTarget] = []
        extra_events: list[Event] = []
        for name, pod in self.resolve(spec=spec, pods=pods):
            readiness = pod_readiness(pod=pod)
            if pod is None or readiness != "Ready":
                message = (
                    f"pod {name} not found"
                    if pod is None
                    else f"pod {name} is not Running with an IP"
                )
                resolved.append(
                    ResolvedTarget(name, pod, pending_state(reason=readiness, message=message))
                )
                continue
            before = previous.get(name)
            if before is not None and is_replaced(recorded=before, pod=pod):
                before = None
            memo = memory.targets.get(name)
            if memo is None or memo.pod_uid != pod.uid:
                memo = memory.targets[name] = TargetMemory(pod_uid=pod.uid)
            port = agent_port(
                spec_port=spec.get("port"), pod=pod, default=self._settings.agent_port
            )
            state, recaching = await self._reconcile_target(
                image=str(image), pod=pod, port=port, before=before, memo=memo
            )
            if recaching:
                extra_events.append(
                    Event("Normal", "Recaching", f"image gone from {name}; re-queued")
                )
            resolved.append(ResolvedTarget(name, pod, state))
        for name in set(memory.targets) - {target.name for target in resolved}:
            del memory.targets[name]
        memory.generation = generation
        memory.quiet_until = self._quiet_until(resolved, memory)
        now = self._wallclock()
        new = build_status(
            previous=status,
            targets=resolved,
            selector_form=selector_form,
            generation=generation,
            now=now,
        )
        events = status_events(previous=status, current=new)
        if extra_events:
            events = extra_events + [e for e in events if e.reason != "Queued"]
        return Outcome(status=new, events=events)

    async def _reconcile_target(
        self,
        *,
        image: str,
        pod: PodInfo,
        port: int,
        before: Mapping[str, Any] | None,
        memo: TargetMemory,
    ) -> tuple[TargetState, bool]:
        now = self._monotonic()
        previous_phase = str(before["phase"]) if before and before.get("phase") else None
        kept = memo.state or (
            TargetState(
                phase=before["phase"],
                reason=str(before.get("reason") or before["phase"]),
                message=str(before.get("message") or ""),
                percent=before.get("percent"),
            )
            if before and before.get("phase")
            else None
        )
        if memo.state is not None:
            if now < memo.not_before:
                return memo.state, False
            terminal = (
                memo.state.phase in ("Cached", "Failed") and memo.state.reason != "Unauthorized"
            )
            if terminal and now - memo.checked_at < self._settings.recheck_interval:
                return memo.state, False
        recheck_due = memo.state is not None
        endpoint = agent_endpoint(ip=str(pod.ip), port=port)
        snap = await self._pollers.snapshot(endpoint)
        if snap.error is not None:
            return self._contact_failed(memo, snap.error, now), False
        assert snap.report is not None
        entry = find_image(report=snap.report, image_id=image)
        put_pending = memo.put_at is not None and memo.put_at >= snap.fetched_at
        action = target_action(
            agent_state=entry.get("state", "absent"),
            previous_phase=previous_phase,
            put_pending=put_pending,
            recheck_due=recheck_due,
        )
        recaching = False
        if action == "report":
            state = state_from_image(entry=entry, pod_name=pod.name)
        elif action == "keep" and kept is not None:
            state = kept
        else:
            recaching = previous_phase == "Cached"
            try:
                code = await self._agents.put_image(endpoint, image)
            except AgentError as error:
                return self._contact_failed(memo, error, now), False
            state = state_from_put(status_code=code, pod_name=pod.name)
            if code == 202:
                memo.put_at = self._monotonic()
        memo.failures = 0
        memo.not_before = 0.0
        if state.phase in ("Cached", "Failed"):
            memo.checked_at = now
        memo.state = state
        return state, recaching

    def _quiet_until(self, resolved: Sequence[ResolvedTarget], memory: RequestMemory) -> float:
        """When this request next needs a pass if nothing changes (0: at the next tick).

        Every target settled (Cached, Failed for a reason retrying cannot fix, or a pod that is
        missing / not ready, which a pod event will wake) means nothing to poll until the
        earliest recheck; anything in flight or backing off needs the next tick.
        """
        now = self._monotonic()
        recheck = self._settings.recheck_interval
        due = [now + recheck]
        for target in resolved:
            state = target.state
            if state.reason in ("PodNotFound", "PodNotReady"):
                continue
            settled = state.phase == "Cached" or (
                state.phase == "Failed" and state.reason != "Unauthorized"
            )
            memo = memory.targets.get(target.name)
            if not settled or memo is None:
                return 0.0
            due.append(memo.checked_at + recheck)
        return min(due)

    def _prune_pollers(self) -> None:
        """Forget agents nobody asked about for a while (pods gone), at most once a minute."""
        now = self._monotonic()
        if now - self._pruned_at >= 60.0:
            self._pruned_at = now
            horizon = 2 * max(self._settings.recheck_interval, self._settings.poll_interval)
            self._pollers.forget_idle(older_than=horizon)

    def _contact_failed(self, memo: TargetMemory, error: AgentError, now: float) -> TargetState:
        memo.failures += 1
        memo.not_before = now + backoff_delay(
            failures=memo.failures,
            base=self._settings.retry_backoff,
            cap=self._settings.retry_backoff_cap,
        )
        if isinstance(error, AgentUnauthorized):
            state = unauthorized_state(status_code=error.status or 401)
        else:
            state = pending_state(reason="AgentUnreachable", message=f"agent unreachable: {error}")
        memo.state = state
        return state

    async def evict(
        self,
        *,
        spec: Mapping[str, Any],
        pods: Sequence[PodInfo],
        memory: RequestMemory,
        deletion_started: datetime | None,
    ) -> EvictOutcome:
        """``DELETE`` the image from every current target; skip gone pods; give up in time."""
        image = str(spec.get("image") or "")
        failed: list[tuple[PodInfo, AgentError]] = []
        for _name, pod in self.resolve(spec=spec, pods=pods):
            if pod is None or pod_readiness(pod=pod) != "Ready" or pod.uid in memory.evicted:
                continue
            port = agent_port(
                spec_port=spec.get("port"), pod=pod, default=self._settings.agent_port
            )
            try:
                await self._agents.delete_image(agent_endpoint(ip=str(pod.ip), port=port), image)
            except AgentError as error:
                failed.append((pod, error))
            else:
                memory.evicted.add(pod.uid)
        if not failed:
            return EvictOutcome(done=True, events=[])
        started = deletion_started or self._wallclock()
        waited = (self._wallclock() - started).total_seconds()
        names = ", ".join(pod.name for pod, _ in failed)
        if waited >= self._settings.evict_timeout:
            message = f"gave up evicting {image} from {names} after {int(waited)}s: {failed[0][1]}"
            return EvictOutcome(done=True, events=[Event("Warning", "EvictionAbandoned", message)])
        memory.evict_failures += 1
        delay = backoff_delay(
            failures=memory.evict_failures,
            base=self._settings.retry_backoff,
            cap=self._settings.retry_backoff_cap,
        )
        delay = max(0.0, min(delay, self._settings.evict_timeout - waited))
        return EvictOutcome(done=False, events=[], retry_in=delay, error=failed[0][1])
