"""When a status change is worth a write (SPEC §4.1 item 3, §4.4): pure, clock passed in.

The patch is always the merge patch from the object's *live* status (as the watch shows it) to
the computed one, so a lost write or someone else's edit is corrected on the next tick. A change
of anything that matters to a reader (phase, reason, a condition's status or reason, the targets
and their phases, the observed generation) is written at once; a progress-only change (bytes,
percent, messages, queue position) at most every ``status_interval`` per object, and while the
request stays ``Queued`` at most every ``queue_position_interval`` (`progress_interval`): each
image an agent finishes moves the position of every request queued behind it, so a drain of
a queue of n would otherwise cost on the order of n² writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagecache.core.status import merge_patch

_TARGET_KEYS = ("pod", "podUID", "podIP", "nodeName", "phase", "reason")


def significant(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status whose change must be written at once."""
    conditions = sorted(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
        for c in status.get("conditions") or []
    )
    targets = [
        tuple(str(entry.get(key)) for key in _TARGET_KEYS) for entry in status.get("targets") or []
    ]
    return {
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "observedGeneration": status.get("observedGeneration"),
        "target": status.get("target"),
        "summary": status.get("summary"),
        "conditions": conditions,
        "targets": targets,
        "cachedAt": status.get("cachedAt"),
    }


@dataclass(frozen=True)
class WriteDecision:
    """The merge patch to send now (empty: nothing to write yet), and whether it is urgent.

    `deferred` is True when a progress-only change waits for its interval to pass.
    """

    patch: dict[str, Any]
    urgent: bool = False
    deferred: bool = False


def progress_interval(
    status: Mapping[str, Any], *, status_interval: float, queue_position_interval: float
) -> float:
    """How long a progress-only change of a request with this status waits after a write."""
    if status.get("phase") == "Queued":
        return max(status_interval, queue_position_interval)
    return status_interval


def decide_write(
    *,
    live: Mapping[str, Any],
    new: Mapping[str, Any],
    last_write_at: float | None,
    now: float,
    interval: float,
) -> WriteDecision:
    """The patch to send this tick: at once for a significant change, else once per `interval`
    (`progress_interval` of the live status)."""
    patch = merge_patch(old=live, new=new)
    if not patch:
        return WriteDecision(patch={})
    if significant(live) != significant(new):
        return WriteDecision(patch=patch, urgent=True)
    if last_write_at is None or now - last_write_at >= interval:
        return WriteDecision(patch=patch)
    return WriteDecision(patch={}, deferred=True)
