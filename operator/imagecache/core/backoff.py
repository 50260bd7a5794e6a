"""Retry delays, the one rule for the operator and the agent: exponential, capped, no clock.

The operator retries an unreachable agent, a refused token and an unresolvable pod, and the
agent retries a transient upstream failure, with the same rule: ``base * 2**(failures-1)``,
never above ``cap``. The agent passes a `jitter` (a random number it draws) so that downloads
failing together do not retry together; the operator's schedule is deterministic. Pure so the
schedule is unit-tested.
"""

from __future__ import annotations


def backoff_delay(*, failures: int, base: float, cap: float, jitter: float = 1.0) -> float:
    """Seconds to wait after `failures` consecutive failures (1 = the first failure).

    Zero failures means no wait. The exponent is bounded before it is computed, so a long run of
    failures never overflows a float. `jitter` in [0, 1] scales the delay into its upper half
    (0.5 … 1.0 of it); the default 1.0 leaves it whole.
    """
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, 62)
    delay = float(min(cap, base * (2**exponent)))
    return delay * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))
