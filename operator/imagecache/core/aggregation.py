"""Phase aggregation for the selector form (SPEC §4.1 item 5) and the per-phase counters.

Rule: ``Cached`` when every target is cached and there is at least one; ``Failed`` when some
target failed and none is still working (every other target is cached or failed); otherwise the
least advanced phase among the targets that have not failed
(``Pending`` < ``Queued`` < ``Caching`` < ``Cached``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict

Phase = Literal["Pending", "Queued", "Caching", "Cached", "Failed"]

PHASES: tuple[Phase, ...] = ("Pending", "Queued", "Caching", "Cached", "Failed")
_PROGRESS_ORDER: dict[Phase, int] = {"Pending": 0, "Queued": 1, "Caching": 2, "Cached": 3}


class Summary(TypedDict):
    """Target counters as written to ``status.summary``."""

    total: int
    queued: int
    caching: int
    cached: int
    failed: int


def aggregate_phase(*, phases: Sequence[Phase]) -> Phase:
    """The object's phase from its targets' phases (no targets: ``Pending``)."""
    if not phases:
        return "Pending"
    working = [phase for phase in phases if phase != "Failed"]
    if len(working) < len(phases) and all(phase == "Cached" for phase in working):
        return "Failed"
    return min(working, key=lambda phase: _PROGRESS_ORDER[phase])


def summarize(*, phases: Sequence[Phase]) -> Summary:
    """Counters per phase; ``Pending`` targets count only in ``total``."""
    return Summary(
        total=len(phases),
        queued=sum(1 for phase in phases if phase == "Queued"),
        caching=sum(1 for phase in phases if phase == "Caching"),
        cached=sum(1 for phase in phases if phase == "Cached"),
        failed=sum(1 for phase in phases if phase == "Failed"),
    )
