"""Retry delays for the operator: exponential, capped, deterministic (no jitter, no clock).

The operator retries an unreachable agent, a refused token and an unresolvable pod with the
same rule: ``base * 2**(failures-1)``, never above ``cap``. Pure so the schedule is unit-tested.
"""

from __future__ import annotations


def backoff_delay(*, failures: int, base: float, cap: float) -> float:
    """Seconds to wait after `failures` consecutive failures (1 = the first failure).

    Zero failures means no wait. The exponent is bounded before it is computed, so a long run of
    failures never overflows a float.
    """
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, 62)
    return float(min(cap, base * (2**exponent)))
