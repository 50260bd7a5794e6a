"""The one retry rule (core/backoff.py) as the agent uses it: jitter spreads a delay over its
upper half, never past the cap, and a huge failure count does not overflow."""

from __future__ import annotations

import pytest

from imagecache.core.backoff import backoff_delay


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        pytest.param(1, 0.0, 0.5, id="first-low"),
        pytest.param(1, 1.0, 1.0, id="first-high"),
        pytest.param(3, 1.0, 4.0, id="third"),
        pytest.param(3, 0.5, 3.0, id="third-middle"),
        pytest.param(20, 1.0, 60.0, id="capped"),
        pytest.param(10_000, 0.0, 30.0, id="huge-capped-low"),
        pytest.param(2, -1.0, 1.0, id="jitter-clamped-low"),
        pytest.param(2, 7.0, 2.0, id="jitter-clamped-high"),
    ],
)
def test_jittered_backoff(failures: int, jitter: float, expected: float) -> None:
    assert backoff_delay(failures=failures, base=1.0, cap=60.0, jitter=jitter) == pytest.approx(
        expected
    )
