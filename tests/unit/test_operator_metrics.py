"""The operator's request metrics, driven with a fake clock (no I/O).

Covers: requests by phase from the statuses the loop computes; the longest stall of a Queued or
Caching request (restarted by a change of phase or of progress bytes, 0 when none waits,
forgotten with the request); the time from a request seen not Cached to its Cached status,
observed once per move to Cached (again after a fall back), never for a request first seen
Cached (an operator restart does not count old requests); the agent-request and API-write
series the alerts rate exist at 0 before the first one.
"""

from __future__ import annotations

from typing import Any

from imagecache.controller.metrics import OperatorMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def status(phase: str, done: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase}
    if done is not None:
        body["progress"] = {"bytes": done, "totalBytes": 100, "percent": done}
    return body


def test_phases_and_stall_clock() -> None:
    clock = Clock()
    metrics = OperatorMetrics(monotonic=clock)
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 0
    metrics.observe_status("a", status("Queued"))
    metrics.observe_status("b", status("Cached"))
    clock.now += 30
    assert sample(metrics, "imagecache_operator_requests", phase="Queued") == 1
    assert sample(metrics, "imagecache_operator_requests", phase="Cached") == 1
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 30
    metrics.observe_status("a", status("Queued"))  # the same status again: no progress
    clock.now += 10
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 40
    metrics.observe_status("a", status("Caching", 10))  # a phase change is progress
    clock.now += 5
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 5
    metrics.observe_status("a", status("Caching", 20))  # so are bytes
    clock.now += 2
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 2
    metrics.observe_status("a", status("Failed"))  # a Failed request does not wait
    clock.now += 100
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 0
    metrics.observe_status("c", status("Caching", 0))
    clock.now += 7
    metrics.keep_phases({"a", "b"})
    assert sample(metrics, "imagecache_operator_request_stall_seconds") == 0
    assert sample(metrics, "imagecache_operator_requests", phase="Caching") == 0
    metrics.set_phase("a", None)
    assert sample(metrics, "imagecache_operator_requests", phase="Failed") == 0


def test_time_to_cached() -> None:
    clock = Clock()
    metrics = OperatorMetrics(monotonic=clock)
    metrics.observe_status("old", status("Cached"))  # first seen Cached: not observed
    metrics.observe_status("new", status("Pending"))
    clock.now += 2
    metrics.observe_status("new", status("Caching", 50))
    clock.now += 3
    metrics.observe_status("new", status("Cached", 100))
    metrics.observe_status("new", status("Cached", 100))  # once per move to Cached
    count = "imagecache_operator_time_to_cached_seconds_count"
    total = "imagecache_operator_time_to_cached_seconds_sum"
    assert sample(metrics, count) == 1 and sample(metrics, total) == 5
    clock.now += 60
    metrics.observe_status("new", status("Queued"))  # gone from its agent: re-cached
    clock.now += 4
    metrics.observe_status("new", status("Cached", 100))
    assert sample(metrics, count) == 2 and sample(metrics, total) == 9


def test_series_the_alerts_rate_exist_at_zero() -> None:
    """A first unreachable agent or failed write must be an increase from 0, not a new series."""
    metrics = OperatorMetrics()
    for method in ("GET", "PUT", "DELETE"):
        for outcome in ("unreachable", "timeout"):
            name = "imagecache_operator_agent_requests_total"
            assert sample(metrics, name, method=method, outcome=outcome) == 0
        name = "imagecache_operator_agent_request_duration_seconds_count"
        assert sample(metrics, name, method=method) == 0
    for kind in ("status", "event"):
        assert sample(metrics, "imagecache_operator_api_writes_total", kind=kind, outcome="ok") == 0
