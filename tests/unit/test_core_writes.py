"""Status-write throttling (core.writes): what is written at once, what waits, what not at all."""

from __future__ import annotations

from typing import Any

import pytest

from imagecache.core.writes import decide_write, progress_interval

CACHING = {
    "phase": "Caching",
    "reason": "Downloading",
    "message": "1 MiB of 8 MiB",
    "progress": {"bytes": 1, "percent": 12},
    "conditions": [{"type": "Cached", "status": "False", "reason": "Downloading"}],
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**CACHING, **changes}


@pytest.mark.parametrize(
    ("new", "last", "now", "written", "urgent"),
    [
        pytest.param(CACHING, None, 0.0, False, False, id="unchanged"),
        pytest.param(
            _with(progress={"bytes": 2, "percent": 25}), None, 0.0, True, False, id="first"
        ),
        pytest.param(
            _with(progress={"bytes": 2, "percent": 25}), 0.0, 4.9, False, False, id="soon"
        ),
        pytest.param(_with(progress={"bytes": 2, "percent": 25}), 0.0, 5.0, True, False, id="due"),
        pytest.param(_with(message="2 MiB of 8 MiB"), 0.0, 1.0, False, False, id="message-only"),
        pytest.param(_with(phase="Cached", reason="Cached"), 0.0, 0.1, True, True, id="phase"),
        pytest.param(_with(reason="Other"), 0.0, 0.1, True, True, id="reason"),
        pytest.param(
            _with(conditions=[{"type": "AgentReachable", "status": "False", "reason": "X"}]),
            0.0,
            0.1,
            True,
            True,
            id="condition",
        ),
        pytest.param(_with(observedGeneration=2), 0.0, 0.1, True, True, id="generation"),
        pytest.param(
            _with(targets=[{"pod": "a", "phase": "Queued", "percent": 1}]),
            0.0,
            0.1,
            True,
            True,
            id="target-added",
        ),
    ],
)
def test_decide_write(
    new: dict[str, Any], last: float | None, now: float, written: bool, urgent: bool
) -> None:
    decision = decide_write(live=CACHING, new=new, last_write_at=last, now=now, interval=5)
    assert bool(decision.patch) is written
    assert decision.urgent is urgent


def test_target_progress_only_waits() -> None:
    live = _with(targets=[{"pod": "a", "phase": "Caching", "reason": "Downloading", "percent": 1}])
    new = _with(targets=[{"pod": "a", "phase": "Caching", "reason": "Downloading", "percent": 9}])
    assert not decide_write(live=live, new=new, last_write_at=0, now=1, interval=5).patch
    patch = decide_write(live=live, new=new, last_write_at=0, now=5, interval=5).patch
    assert patch == {"targets": new["targets"]}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("Queued", 30.0), ("Caching", 5.0), ("Pending", 5.0), (None, 5.0)],
)
def test_a_queued_request_s_progress_waits_for_the_queue_position_interval(
    phase: str | None, expected: float
) -> None:
    status = {"phase": phase} if phase else {}
    interval = progress_interval(status, status_interval=5.0, queue_position_interval=30.0)
    assert interval == expected


def test_the_queue_position_interval_never_shortens_the_status_interval() -> None:
    status = {"phase": "Queued"}
    assert progress_interval(status, status_interval=5.0, queue_position_interval=0.0) == 5.0
