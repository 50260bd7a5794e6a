"""From what the operator observed (pods, agent answers) to an ``ImageCacheRequest`` status.

Pure functions over plain data (SPEC §3 status, §4.1 items 2, 3, 7):

* `find_image` picks one image out of an agent's ``GET /v2/cache`` report;
* `state_from_image` / `state_from_put` / `pending_state` map it (or a ``PUT`` answer, or a
  resolution problem) to a `TargetState`: phase, CamelCase reason, message and progress;
* `build_status` assembles the whole status (single-pod or selector form) from the targets'
  states and the previous status, keeping timestamps and condition transition times stable;
* `status_events` says which Kubernetes events a change of phase deserves;
* `agent_reachable_condition` says whether the agents answered: ``Cached`` survives an agent
  outage, the outage shows as ``AgentReachable=False`` instead;
* `build_status` lists at most `MAX_STATUS_TARGETS` targets (``summary`` counts them all);
* `merge_patch` computes the JSON merge patch from the old status to the new one (empty when
  nothing changed, so nothing is written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from imagecache.core.aggregation import Phase, aggregate_phase, summarize
from imagecache.core.sizes import format_size
from imagecache.core.targets import PodInfo
from imagecache.core.wire import ImageReport, image_report

EventType = Literal["Normal", "Warning"]

_WARNING_REASONS = frozenset(
    {"PodNotFound", "AgentUnreachable", "Unauthorized", "CredentialUnavailable"}
)

MAX_STATUS_TARGETS = 100
"""``status.targets`` lists at most this many targets (the first by pod name); the counts of
all of them are in ``status.summary``. The CRD's ``maxItems`` matches. 100 entries keep a status
near 20 KB, far below etcd's object limit whatever the fleet size."""


@dataclass(frozen=True)
class TargetState:
    """The state of the image on one target, as the status reports it."""

    phase: Phase
    reason: str
    message: str = ""
    bytes: int | None = None
    total_bytes: int | None = None
    percent: int | None = None
    queue_position: int | None = None
    attempts: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    cached_at: float | None = None
    reachable: bool | None = None
    """Whether the agent answered this tick (None: not asked, e.g. the pod is not Ready)."""
    unreachable: str = ""
    """Why the agent did not answer (when `reachable` is False)."""
    unreachable_reason: str = "AgentUnreachable"
    """The ``AgentReachable`` condition's reason when `reachable` is False (``AgentInvalidAnswer``
    for an answer that is not the wire contract's shape)."""
    source: str | None = None
    """Where the target fills (or filled) from: ``upstream`` or a peer agent's URL (fan-out)."""


@dataclass(frozen=True)
class ResolvedTarget:
    """One target of a request: its pod name, the pod if known, and the image's state there."""

    name: str
    pod: PodInfo | None
    state: TargetState


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the request."""

    type: EventType
    reason: str
    message: str


def find_image(*, report: Mapping[str, Any], image_id: str) -> ImageReport:
    """The image's entry in a ``GET /v2/cache`` report; ``state: absent`` when not listed.

    Precedence: failed, caching, cached, then queued (whose position is its index in
    ``queued_images`` minus the number being downloaded, per docs/architecture.md).
    """
    for entry in report.get("failed_images") or []:
        if entry.get("image_id") == image_id:
            return cast(ImageReport, {**entry, "state": "failed"})
    caching = list(report.get("caching_images") or [])
    for entry in caching:
        if entry.get("image_id") == image_id:
            return cast(ImageReport, {**entry, "state": "caching"})
    for cached in report.get("cached_images") or []:
        if cached.get("image_id") == image_id:
            size = cached.get("size")
            return image_report(
                image_id,
                "cached",
                size=size,
                bytes=size or 0,
                percent=100,
                cached_at=cached.get("last_modified"),
                source=str(cached.get("source") or "upstream"),
            )
    queued = list(report.get("queued_images") or [])
    if image_id in queued:
        caching_ids = {entry.get("image_id") for entry in caching}
        waiting = [item for item in queued if item not in caching_ids]
        return image_report(image_id, "queued", queue_position=waiting.index(image_id))
    return image_report(image_id, "absent")


def reported_source(value: object) -> str | None:
    """An agent's ``source`` (``upstream`` or a peer's http(s) URL), or None when malformed."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    if value == "upstream" or value.startswith(("http://", "https://")):
        return value
    return None


def _percent(*, done: int | None, total: int | None, reported: float | None) -> int | None:
    if reported is not None:
        return max(0, min(100, int(reported)))
    if done is not None and total:
        return max(0, min(100, done * 100 // total))
    return None


def room_needed(entry: Mapping[str, Any]) -> int | None:
    """Bytes the agent still has to free when it reports the download waiting for room under
    its ``max_size`` (``waiting_for_room``, ``bytes_needed``); None otherwise or when the two
    fields are not what the wire contract says (a bool and a non-negative integer)."""
    needed = entry.get("bytes_needed")
    if entry.get("waiting_for_room") is not True:
        return None
    if not isinstance(needed, int) or isinstance(needed, bool) or needed < 0:
        return None
    return needed


def _room_message(needed: int, pod_name: str) -> str:
    return (
        f"waiting on {pod_name} for room under the agent's max_size: {format_size(needed)} "
        "more needed, held by images being served or by other downloads (NoRoom after the "
        "agent's room_wait_timeout)"
    )


def state_from_image(*, entry: ImageReport, pod_name: str) -> TargetState:
    """Map the agent's per-image report to a target state (``absent`` maps to ``Pending``).

    A download the agent reports waiting for room keeps its phase (``Queued`` or ``Caching``)
    with reason ``WaitingForRoom`` and the bytes needed in its message.
    """
    size = entry.get("size")
    done = entry.get("bytes")
    common: dict[str, Any] = {
        "total_bytes": size,
        "attempts": entry.get("attempts"),
        "queued_at": entry.get("queued_at"),
        "started_at": entry.get("started_at"),
        "cached_at": entry.get("cached_at"),
        "source": reported_source(entry.get("source")),
    }
    state = entry.get("state", "absent")
    needed = room_needed(entry) if state in ("queued", "caching") else None
    if state == "cached":
        return TargetState(
            phase="Cached",
            reason="Cached",
            bytes=size,
            percent=100,
            message=f"cached on {pod_name}" + (f" ({format_size(size)})" if size else ""),
            **common,
        )
    if state == "caching":
        done = done or 0
        percent = _percent(done=done, total=size, reported=entry.get("percent"))
        message = f"{format_size(done)} of {format_size(size)}" if size else f"{format_size(done)}"
        return TargetState(
            phase="Caching",
            reason="Downloading" if needed is None else "WaitingForRoom",
            message=message if needed is None else f"{message}; {_room_message(needed, pod_name)}",
            bytes=done,
            percent=percent,
            queue_position=0,
            **common,
        )
    if state == "queued":
        position = entry.get("queue_position")
        where = f" at position {position}" if position is not None else ""
        return TargetState(
            phase="Queued",
            reason="Queued" if needed is None else "WaitingForRoom",
            message=f"queued on {pod_name}{where}"
            if needed is None
            else _room_message(needed, pod_name),
            bytes=0 if size else None,
            percent=0 if size else None,
            queue_position=position,
            **common,
        )
    if state == "failed":
        return TargetState(
            phase="Failed",
            reason="CachingFailed",
            message=entry.get("error") or "the agent failed to cache the image",
            **common,
        )
    return pending_state(reason="NotQueued", message=f"the image is not queued on {pod_name}")


def state_from_put(*, status_code: int, pod_name: str, detail: str = "") -> TargetState:
    """Map the agent's answer to ``PUT /v2/cache/{id}`` to a target state."""
    suffix = f": {detail}" if detail else ""
    if status_code == 202:
        return TargetState(phase="Queued", reason="Queued", message=f"queued on {pod_name}")
    if status_code == 404:
        return TargetState(
            phase="Failed", reason="ImageNotFound", message=f"the image is unknown upstream{suffix}"
        )
    if status_code == 400:
        return TargetState(
            phase="Failed", reason="ImageNotActive", message=f"the image is not active{suffix}"
        )
    if status_code in (401, 403):
        return unauthorized_state(status_code=status_code)
    return pending_state(
        reason="AgentUnreachable", message=f"the agent on {pod_name} answered {status_code}{suffix}"
    )


def unauthorized_state(*, status_code: int) -> TargetState:
    """The agent refused the operator's token."""
    return TargetState(
        phase="Failed",
        reason="Unauthorized",
        message=f"the agent refused the operator's token ({status_code}); check the agent token",
    )


def pending_state(*, reason: str, message: str) -> TargetState:
    """A target that is not reachable yet (pod missing or not ready, agent unreachable)."""
    return TargetState(phase="Pending", reason=reason, message=message)


def format_time(value: float | datetime) -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, tz=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_REACHED: dict[str, frozenset[Phase]] = {
    "queuedAt": frozenset({"Queued", "Caching", "Cached"}),
    "startedAt": frozenset({"Caching", "Cached"}),
    "cachedAt": frozenset({"Cached"}),
}


def _timestamps(
    *,
    phase: Phase,
    reported: Mapping[str, float | None],
    previous: Mapping[str, Any],
    now: datetime,
) -> dict[str, str]:
    """queuedAt/startedAt/cachedAt: from the agent when it says, else kept, else now.

    A timestamp exists only once its phase is reached; ``Pending`` and ``Failed`` keep what the
    previous status had.
    """
    stamps: dict[str, str] = {}
    for key, phases in _REACHED.items():
        if phase in phases:
            value = reported.get(key)
            if value is not None:
                stamps[key] = format_time(value)
            elif previous.get(key):
                stamps[key] = str(previous[key])
            else:
                stamps[key] = format_time(now)
        elif phase in ("Pending", "Failed") and previous.get(key):
            stamps[key] = str(previous[key])
    return stamps


def _condition(
    *,
    phase: Phase,
    reason: str,
    message: str,
    previous: Mapping[str, Any],
    generation: int,
    now: datetime,
    kind: str = "Cached",
    status: str | None = None,
) -> dict[str, Any]:
    if status is None:
        status = "True" if phase == "Cached" else "False"
    before = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        transition = str(before["lastTransitionTime"])
    else:
        transition = format_time(now)
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


def agent_reachable_condition(
    *,
    targets: Sequence[ResolvedTarget],
    previous: Mapping[str, Any],
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """``AgentReachable``: False when any target's agent did not answer, True when all asked
    did, Unknown when none was asked (no Ready pod yet)."""
    down = [t for t in targets if t.state.reachable is False]
    if down:
        status, reason = "False", down[0].state.unreachable_reason
        message = "; ".join(f"{t.name}: {t.state.unreachable}" for t in down[:3])
    elif any(t.state.reachable for t in targets):
        status, reason, message = "True", "AgentAnswered", "every target's agent answered"
    else:
        status, reason, message = "Unknown", "NoReadyTarget", "no Ready target pod to ask"
    return _condition(
        phase="Pending",
        reason=reason,
        message=message,
        previous=previous,
        generation=generation,
        now=now,
        kind="AgentReachable",
        status=status,
    )


def _target_identity(target: ResolvedTarget) -> dict[str, Any]:
    identity: dict[str, Any] = {"pod": target.name}
    if target.pod is not None:
        identity["podUID"] = target.pod.uid
        if target.pod.ip:
            identity["podIP"] = target.pod.ip
        if target.pod.node_name:
            identity["nodeName"] = target.pod.node_name
    if target.state.source is not None:
        identity["source"] = target.state.source
    return identity


def build_status(
    *,
    previous: Mapping[str, Any],
    targets: Sequence[ResolvedTarget],
    selector_form: bool,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """The complete status for the request (see SPEC §3 for the fields)."""
    if selector_form:
        return _selector_status(previous=previous, targets=targets, generation=generation, now=now)
    if len(targets) != 1:
        raise ValueError("the single-pod form has exactly one target")
    target = targets[0]
    state = target.state
    status: dict[str, Any] = {
        "phase": state.phase,
        "reason": state.reason,
        "message": state.message,
    }
    if state.total_bytes is not None or state.bytes is not None:
        progress: dict[str, Any] = {}
        if state.bytes is not None:
            progress["bytes"] = state.bytes
        if state.total_bytes is not None:
            progress["totalBytes"] = state.total_bytes
        if state.percent is not None:
            progress["percent"] = state.percent
        status["progress"] = progress
    if state.queue_position is not None and state.phase in ("Queued", "Caching"):
        status["queuePosition"] = state.queue_position
    if state.attempts is not None:
        status["attempts"] = state.attempts
    status["target"] = _target_identity(target)
    status["conditions"] = [
        _condition(
            phase=state.phase,
            reason=state.reason,
            message=state.message,
            previous=previous,
            generation=generation,
            now=now,
        ),
        agent_reachable_condition(
            targets=targets, previous=previous, generation=generation, now=now
        ),
    ]
    status["observedGeneration"] = generation
    reported = {
        "queuedAt": state.queued_at,
        "startedAt": state.started_at,
        "cachedAt": state.cached_at,
    }
    status.update(_timestamps(phase=state.phase, reported=reported, previous=previous, now=now))
    return status


def _earliest(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def _selector_status(
    *,
    previous: Mapping[str, Any],
    targets: Sequence[ResolvedTarget],
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    phases = [target.state.phase for target in targets]
    phase = aggregate_phase(phases=phases)
    summary = summarize(phases=phases)
    if not targets:
        reason, message = "NoMatchingPods", "no Running pod matches the selector"
    elif phase == "Cached":
        reason, message = "Cached", f"cached on all {len(targets)} target(s)"
    else:
        leader = next(
            t
            for t in targets
            if t.state.phase == phase or (phase == "Failed" and t.state.phase == "Failed")
        )
        reason = leader.state.reason
        message = (
            f"{summary['cached']}/{summary['total']} cached; {leader.name}: {leader.state.message}"
        )
    entries = []
    for target in targets[:MAX_STATUS_TARGETS]:
        entry = _target_identity(target)
        entry["phase"] = target.state.phase
        entry["reason"] = target.state.reason
        if target.state.percent is not None:
            entry["percent"] = target.state.percent
        entry["message"] = target.state.message
        entries.append(entry)
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "progress": {"percent": summary["cached"] * 100 // summary["total"] if targets else 0},
        "targets": entries,
        "summary": dict(summary),
        "conditions": [
            _condition(
                phase=phase,
                reason=reason,
                message=message,
                previous=previous,
                generation=generation,
                now=now,
            ),
            agent_reachable_condition(
                targets=targets, previous=previous, generation=generation, now=now
            ),
        ],
        "observedGeneration": generation,
    }
    cached_times = [t.state.cached_at for t in targets]
    reported = {
        "queuedAt": _earliest([t.state.queued_at for t in targets]),
        "startedAt": _earliest([t.state.started_at for t in targets]),
        "cachedAt": max(v for v in cached_times if v is not None)
        if phase == "Cached" and all(v is not None for v in cached_times)
        else None,
    }
    status.update(_timestamps(phase=phase, reported=reported, previous=previous, now=now))
    return status


def _condition_status(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _condition_message(status: Mapping[str, Any], kind: str) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("message") or "")
    return ""


def status_events(*, previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    """Events for a change of phase (or of the reason a request is Pending or Failed), and a
    Warning when an agent stops answering while the phase stands (e.g. a Cached request)."""
    events = _phase_events(previous=previous, current=current)
    lost = (
        _condition_status(current, "AgentReachable") == "False"
        and _condition_status(previous, "AgentReachable") != "False"
    )
    if lost and not any(e.reason == "AgentUnreachable" for e in events):
        message = _condition_message(current, "AgentReachable")
        events.append(Event(type="Warning", reason="AgentUnreachable", message=message))
    return events


def _phase_events(*, previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    phase = current.get("phase")
    reason = str(current.get("reason") or "")
    changed = previous.get("phase") != phase or (
        phase in ("Pending", "Failed") and previous.get("reason") != reason
    )
    if not changed or phase is None:
        return []
    message = str(current.get("message") or "")
    if phase == "Failed":
        name = "Unauthorized" if reason == "Unauthorized" else "Failed"
        return [Event(type="Warning", reason=name, message=f"{reason}: {message}")]
    if phase == "Pending":
        kind: EventType = "Warning" if reason in _WARNING_REASONS else "Normal"
        return [Event(type=kind, reason=reason or "Pending", message=message)]
    return [Event(type="Normal", reason=str(phase), message=message)]


def merge_patch(*, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning `old` into `new` (nested objects diffed, lists replaced)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(old=before, new=value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch
