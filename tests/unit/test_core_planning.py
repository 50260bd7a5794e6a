"""The reconcile loop's planner (core.planning): targets, due-ness, one poll per endpoint.

Covers: Ready pods only; the single and selector forms; the port from spec, annotation or
default; which targets are due (new, backing off, settled until the recheck); one endpoint per
agent however many requests; deleting and invalid requests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagecache.core.planning import (
    RequestView,
    TargetSchedule,
    is_due,
    plan_tick,
    request_view,
)
from imagecache.core.status import TargetState
from imagecache.core.targets import PodInfo


def _pod(name: str, ip: str = "10.0.0.1", **kw: Any) -> PodInfo:
    base: dict[str, Any] = {"phase": "Running", "ready": True, "labels": {"app": "g"}}
    return PodInfo(namespace="ns", name=name, uid=f"u-{name}", ip=ip, **{**base, **kw})


def _req(name: str, spec: dict[str, Any], **kw: Any) -> RequestView:
    return RequestView(
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        generation=1,
        resource_version="1",
        spec=spec,
        status={},
        **kw,
    )


CACHED = TargetState(phase="Cached", reason="Cached")
QUEUED = TargetState(phase="Queued", reason="Queued")
UNAUTHORIZED = TargetState(phase="Failed", reason="Unauthorized")
NOT_FOUND = TargetState(phase="Failed", reason="ImageNotFound")


@pytest.mark.parametrize(
    ("schedule", "now", "due"),
    [
        pytest.param(None, 0.0, True, id="new"),
        pytest.param(TargetSchedule(state=QUEUED), 0.0, True, id="in-flight"),
        pytest.param(TargetSchedule(state=QUEUED, not_before=5.0), 4.9, False, id="backing-off"),
        pytest.param(TargetSchedule(state=QUEUED, not_before=5.0), 5.0, True, id="backoff-over"),
        pytest.param(TargetSchedule(state=CACHED, checked_at=0.0), 9.9, False, id="cached-rests"),
        pytest.param(TargetSchedule(state=CACHED, checked_at=0.0), 10.0, True, id="recheck"),
        pytest.param(TargetSchedule(state=NOT_FOUND), 1.0, False, id="failed-rests"),
        pytest.param(TargetSchedule(state=UNAUTHORIZED), 1.0, True, id="unauthorized-retries"),
    ],
)
def test_is_due(schedule: TargetSchedule | None, now: float, due: bool) -> None:
    assert is_due(schedule, now=now, recheck_interval=10.0) is due


@pytest.mark.parametrize(
    ("pods", "spec", "endpoints", "waiting"),
    [
        pytest.param([_pod("p")], {"pod": "p"}, ["http://10.0.0.1:9292"], [], id="single"),
        pytest.param([], {"pod": "p"}, [], ["PodNotFound"], id="missing"),
        pytest.param([_pod("p", ready=False)], {"pod": "p"}, [], ["PodNotReady"], id="not-ready"),
        pytest.param([_pod("p", ip=None)], {"pod": "p"}, [], ["PodNotReady"], id="no-ip"),
        pytest.param([_pod("p", phase="Pending")], {"pod": "p"}, [], ["PodNotReady"], id="pending"),
        pytest.param(
            [_pod("p")], {"pod": "p", "port": 8000}, ["http://10.0.0.1:8000"], [], id="spec-port"
        ),
        pytest.param(
            [_pod("p", annotations={"imagecache.dev/port": "7000"})],
            {"pod": "p"},
            ["http://10.0.0.1:7000"],
            [],
            id="annotation-port",
        ),
        pytest.param(
            [_pod("b", ip="10.0.0.2"), _pod("a"), _pod("c", ready=False)],
            {"podSelector": {"matchLabels": {"app": "g"}}},
            ["http://10.0.0.1:9292", "http://10.0.0.2:9292"],
            [],
            id="selector-ready-only",
        ),
    ],
)
def test_plan_targets(
    pods: list[PodInfo], spec: dict[str, Any], endpoints: list[str], waiting: list[str]
) -> None:
    plan = plan_tick(
        requests=[_req("r", {"image": "img", **spec})],
        pods={"ns": pods},
        schedules={},
        now=0.0,
        default_port=9292,
        recheck_interval=10.0,
    )
    (request,) = plan.requests
    assert [t.endpoint for t in request.targets if t.endpoint] == endpoints
    assert [t.waiting.reason for t in request.targets if t.waiting] == waiting
    assert plan.polls == frozenset(endpoints)


def test_one_poll_per_endpoint_for_many_requests_and_none_for_resting_ones() -> None:
    pods = {"ns": [_pod("p"), _pod("q", ip="10.0.0.2")]}
    requests = [_req(f"r{n}", {"image": f"i{n}", "pod": "pq"[n % 2]}) for n in range(100)]
    plan = plan_tick(
        requests=requests, pods=pods, schedules={}, now=0, default_port=1, recheck_interval=1
    )
    assert plan.polls == {"http://10.0.0.1:1", "http://10.0.0.2:1"}
    resting = {
        ("uid-" + r.name, "u-" + r.spec["pod"]): TargetSchedule(state=CACHED, checked_at=0)
        for r in requests
        if r.spec["pod"] == "q"
    }
    plan = plan_tick(
        requests=requests, pods=pods, schedules=resting, now=0.5, default_port=1, recheck_interval=1
    )
    assert plan.polls == {"http://10.0.0.1:1"}


def test_deleting_and_invalid_requests() -> None:
    plan = plan_tick(
        requests=[
            _req("gone", {"image": "i", "pod": "p"}, deleting=True),
            _req("bad", {"pod": "p"}),
            _req("neither", {"image": "i"}),
        ],
        pods={"ns": [_pod("p")]},
        schedules={},
        now=0,
        default_port=1,
        recheck_interval=1,
    )
    assert [(p.request.name, p.invalid is not None) for p in plan.requests] == [
        ("bad", True),
        ("neither", True),
    ]
    assert plan.polls == frozenset()


def test_views_of_separately_decoded_bodies_share_their_strings() -> None:
    """Every watch event decodes its own strings; views intern them (a fleet keeps one each)."""
    raw = json.dumps(
        {
            "metadata": {"namespace": "ns", "name": "r", "uid": "u"},
            "spec": {"image": "img-1", "pod": "glance-0"},
            "status": {"phase": "Cached", "target": {"pod": "glance-0", "podIP": "10.0.0.7"}},
        }
    )
    first, second = request_view(json.loads(raw)), request_view(json.loads(raw))
    assert first.status == second.status and first.spec == second.spec
    key = next(iter(first.status["target"]))
    assert key is next(iter(second.status["target"]))
    assert first.status["phase"] is second.status["phase"]
    assert first.spec["image"] is second.spec["image"]
