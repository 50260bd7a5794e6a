"""How far apart agent polls go when the operator is saturated (pure; issue 14).

Polling costs the operator CPU in proportion to agents / ``poll_interval`` for as long as
requests are in flight, whatever else it has to do. When the process cannot keep up (its event
loop lags behind: watch events, PUTs and status writes wait), that cost feeds itself: requests
stay in flight longer, so their agents are polled longer. `next_stretch` breaks the loop the way
overload managers do, additive-increase/multiplicative-decrease turned around: while the
measured loop lag is above `PacePolicy.high` the poll interval is stretched by `up` per sample
(up to `cap` times ``poll_interval``), and while it is below `low` it shrinks back by `down`
towards 1. Between the two it stays. A stretch of 1 is the configured ``poll_interval``; SPEC
§4.1's "at most one status request per agent per poll interval" holds at any stretch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PacePolicy:
    """Thresholds (seconds of loop lag) and steps of the poll stretch."""

    high: float = 0.05
    low: float = 0.01
    up: float = 1.5
    down: float = 1.25
    cap: float = 8.0

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError("PacePolicy needs 0 <= low <= high")
        if self.up < 1 or self.down < 1 or self.cap < 1:
            raise ValueError("PacePolicy's up, down and cap are factors >= 1")


def next_stretch(stretch: float, lag: float, policy: PacePolicy) -> float:
    """The stretch after one sample of the event loop's lag (seconds late)."""
    if lag > policy.high:
        return min(policy.cap, stretch * policy.up)
    if lag < policy.low:
        return max(1.0, stretch / policy.down)
    return min(policy.cap, max(1.0, stretch))
