"""How far apart agent polls go when the operator is saturated (pure; issue 14).

Polling costs the operator CPU in proportion to agents / ``poll_interval`` for as long as
requests are in flight, whatever else it has to do. When the process cannot keep up, that cost
feeds itself: requests stay in flight longer, so their agents are polled longer. `next_stretch`
breaks the loop the way overload managers do, from two signals of one `Load` sample:

* the event loop's lag (how late a timer fired): the loop is behind, every callback waits;
* how busy the process is (its CPU seconds per wall second over the last second): a loop
  that keeps its timers on time can still have no CPU to spare, and then each poll is taken
  from the watch events, PUTs and status writes queued behind it.

Additive-increase/multiplicative-decrease turned around: while either signal is above its high
mark the poll interval is stretched by `up` per sample (up to `cap` times ``poll_interval``);
while both are below their low marks it shrinks back by `down` towards 1. Between the two it
stays. A stretch of 1 is the configured ``poll_interval``; SPEC §4.1's "at most one status
request per agent per poll interval" holds at any stretch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PacePolicy:
    """Marks (seconds of loop lag, fraction of a core busy) and steps of the poll stretch."""

    high: float = 0.05
    low: float = 0.01
    busy_high: float = 0.9
    busy_low: float = 0.7
    up: float = 1.5
    down: float = 1.25
    cap: float = 8.0

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError("PacePolicy needs 0 <= low <= high")
        if not 0 <= self.busy_low <= self.busy_high:
            raise ValueError("PacePolicy needs 0 <= busy_low <= busy_high")
        if self.up < 1 or self.down < 1 or self.cap < 1:
            raise ValueError("PacePolicy's up, down and cap are factors >= 1")


@dataclass(frozen=True)
class Load:
    """One sample: the loop's lag (seconds late) and the process's busy fraction of a core."""

    lag: float
    busy: float = 0.0


def next_stretch(stretch: float, load: Load, policy: PacePolicy) -> float:
    """The stretch after one sample of the process's load."""
    if load.lag > policy.high or load.busy > policy.busy_high:
        return min(policy.cap, stretch * policy.up)
    if load.lag < policy.low and load.busy < policy.busy_low:
        return max(1.0, stretch / policy.down)
    return min(policy.cap, max(1.0, stretch))
