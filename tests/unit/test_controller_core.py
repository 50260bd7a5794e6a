"""Unit tests of the operator's pure core: backoff, aggregation, selectors, target diffing and
actions, the agent report -> status mapping, events and merge patches.

Covers: `imagecache.core.backoff`, `.aggregation`, `.targets`, `.status` (parameter tables).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagecache.core.aggregation import aggregate_phase, summarize
from imagecache.core.backoff import backoff_delay
from imagecache.core.status import (
    ResolvedTarget,
    TargetState,
    build_status,
    find_image,
    merge_patch,
    room_needed,
    state_from_image,
    state_from_put,
    status_events,
)
from imagecache.core.targets import (
    PodInfo,
    agent_endpoint,
    agent_port,
    diff_targets,
    pod_info,
    pod_readiness,
    select_targets,
    selector_matches,
    target_action,
)
from imagecache.core.wire import image_report

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        pytest.param(0, 0.0, id="none"),
        pytest.param(1, 1.0, id="first"),
        pytest.param(3, 4.0, id="third"),
        pytest.param(10, 300.0, id="capped"),
        pytest.param(10_000, 300.0, id="huge-no-overflow"),
    ],
)
def test_backoff_delay(failures: int, expected: float) -> None:
    assert backoff_delay(failures=failures, base=1.0, cap=300.0) == expected


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        pytest.param([], "Pending", id="no-targets"),
        pytest.param(["Cached", "Cached"], "Cached", id="all-cached"),
        pytest.param(["Cached", "Failed"], "Failed", id="failed-rest-done"),
        pytest.param(["Failed", "Failed"], "Failed", id="all-failed"),
        pytest.param(["Failed", "Caching"], "Caching", id="failed-but-working"),
        pytest.param(["Cached", "Queued", "Caching"], "Queued", id="least-advanced"),
        pytest.param(["Pending", "Cached"], "Pending", id="pending-is-least"),
    ],
)
def test_aggregate_phase(phases: list[Any], expected: str) -> None:
    assert aggregate_phase(phases=phases) == expected


def test_summarize_counts_each_phase() -> None:
    summary = summarize(phases=["Pending", "Queued", "Caching", "Cached", "Cached", "Failed"])
    assert summary == {"total": 6, "queued": 1, "caching": 1, "cached": 2, "failed": 1}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param({}, {"a": "1"}, True, id="empty-matches-all"),
        pytest.param({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True, id="labels"),
        pytest.param({"matchLabels": {"a": "1"}}, {"a": "2"}, False, id="labels-differ"),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
            id="notin",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {},
            True,
            id="notin-absent",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False, id="exists"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
            {},
            True,
            id="does-not-exist",
        ),
    ],
)
def test_selector_matches(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector=selector, labels=labels) is expected


def _pod(name: str, **kwargs: Any) -> PodInfo:
    defaults: dict[str, Any] = {
        "namespace": "ns",
        "uid": f"uid-{name}",
        "ip": "10.0.0.1",
        "phase": "Running",
        "ready": True,
    }
    return PodInfo(name=name, **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(None, "PodNotFound", id="missing"),
        pytest.param(_pod("a"), "Ready", id="ready"),
        pytest.param(_pod("a", ip=None), "PodNotReady", id="no-ip"),
        pytest.param(_pod("a", phase="Pending"), "PodNotReady", id="pending"),
        pytest.param(_pod("a", deleting=True), "PodNotReady", id="deleting"),
        pytest.param(_pod("a", ready=False), "PodNotReady", id="running-not-ready"),
    ],
)
def test_pod_readiness(pod: PodInfo | None, expected: str) -> None:
    assert pod_readiness(pod=pod) == expected


def test_pod_info_from_a_body() -> None:
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1"}},
        "spec": {"nodeName": "n1"},
        "status": {
            "podIP": "10.1.2.3",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    info = pod_info(body)
    assert info.ready
    assert not pod_info({**body, "status": {"phase": "Running", "podIP": "10.1.2.3"}}).ready
    assert (info.name, info.uid, info.ip, info.node_name, info.phase) == (
        "p",
        "u",
        "10.1.2.3",
        "n1",
        "Running",
    )
    assert info.labels == {"a": "1"} and not info.deleting


def test_select_targets_keeps_ready_matching_pods_sorted() -> None:
    pods = [
        _pod("b", labels={"app": "g"}),
        _pod("a", labels={"app": "g"}),
        _pod("c", labels={"app": "x"}),
        _pod("d", labels={"app": "g"}, ip=None),
        _pod("e", labels={"app": "g"}, ready=False),
    ]
    chosen = select_targets(pods=pods, selector={"matchLabels": {"app": "g"}})
    assert [p.name for p in chosen] == ["a", "b"]


@pytest.mark.parametrize(
    ("spec_port", "annotations", "expected"),
    [
        pytest.param(9000, {"imagecache.dev/port": "9100"}, 9000, id="spec-wins"),
        pytest.param(None, {"imagecache.dev/port": "9100"}, 9100, id="annotation"),
        pytest.param(None, {"imagecache.dev/port": "nope"}, 9292, id="bad-annotation"),
        pytest.param(None, {"imagecache.dev/port": "70000"}, 9292, id="out-of-range"),
        pytest.param(None, {}, 9292, id="default"),
    ],
)
def test_agent_port(spec_port: int | None, annotations: dict[str, str], expected: int) -> None:
    pod = _pod("a", annotations=annotations)
    assert agent_port(spec_port=spec_port, pod=pod, default=9292) == expected


def test_agent_endpoint_brackets_ipv6() -> None:
    assert agent_endpoint(ip="10.0.0.1", port=1) == "http://10.0.0.1:1"
    assert agent_endpoint(ip="fd00::1", port=2) == "http://[fd00::1]:2"


def test_diff_targets() -> None:
    previous = [
        {"pod": "kept", "podUID": "uid-kept", "podIP": "10.0.0.1"},
        {"pod": "gone", "podUID": "uid-gone"},
        {"pod": "swapped", "podUID": "old-uid"},
    ]
    current = [_pod("kept"), _pod("swapped"), _pod("new")]
    diff = diff_targets(previous=previous, current=current)
    assert diff.added == ("new",) and diff.removed == ("gone",)
    assert diff.replaced == ("swapped",) and diff.kept == ("kept",)


@pytest.mark.parametrize(
    ("agent_state", "previous", "put_pending", "recheck_due", "expected"),
    [
        pytest.param("caching", None, False, False, "report", id="caching-reported"),
        pytest.param("cached", "Queued", True, False, "report", id="cached-reported"),
        pytest.param("absent", None, False, False, "put", id="new-request"),
        pytest.param("absent", "Cached", False, True, "put", id="recaching"),
        pytest.param("absent", "Queued", True, False, "keep", id="report-older-than-put"),
        pytest.param("absent", "Failed", False, False, "keep", id="failed-not-due"),
        pytest.param("absent", "Failed", False, True, "put", id="failed-due"),
        pytest.param("failed", None, False, False, "put", id="failed-earlier-fresh-request"),
        pytest.param("failed", "Caching", False, False, "report", id="failed-now"),
        pytest.param("failed", "Failed", False, True, "put", id="failed-retry-when-due"),
    ],
)
def test_target_action(
    agent_state: str, previous: str | None, put_pending: bool, recheck_due: bool, expected: str
) -> None:
    assert (
        target_action(
            agent_state=agent_state,
            previous_phase=previous,
            put_pending=put_pending,
            recheck_due=recheck_due,
        )
        == expected
    )


REPORT: dict[str, Any] = {
    "cached_images": [{"image_id": "c", "size": 10, "last_modified": 1_700_000_000.0, "hits": 0}],
    "queued_images": ["k", "q1", "q2"],
    "caching_images": [{"image_id": "k", "state": "caching", "size": 100, "bytes": 25}],
    "failed_images": [{"image_id": "f", "state": "failed", "error": "checksum mismatch"}],
}


@pytest.mark.parametrize(
    ("image", "state", "position"),
    [
        pytest.param("c", "cached", None, id="cached"),
        pytest.param("k", "caching", None, id="caching"),
        pytest.param("q1", "queued", 0, id="queued-first"),
        pytest.param("q2", "queued", 1, id="queued-second"),
        pytest.param("f", "failed", None, id="failed"),
        pytest.param("zz", "absent", None, id="absent"),
    ],
)
def test_find_image(image: str, state: str, position: int | None) -> None:
    entry = find_image(report=REPORT, image_id=image)
    assert entry["state"] == state
    assert entry.get("queue_position") == position


@pytest.mark.parametrize(
    ("image", "phase", "reason", "percent"),
    [
        pytest.param("c", "Cached", "Cached", 100, id="cached"),
        pytest.param("k", "Caching", "Downloading", 25, id="caching"),
        pytest.param("q2", "Queued", "Queued", None, id="queued"),
        pytest.param("f", "Failed", "CachingFailed", None, id="failed"),
        pytest.param("zz", "Pending", "NotQueued", None, id="absent"),
    ],
)
def test_state_from_image(image: str, phase: str, reason: str, percent: int | None) -> None:
    state = state_from_image(entry=find_image(report=REPORT, image_id=image), pod_name="p")
    assert (state.phase, state.reason, state.percent) == (phase, reason, percent)


def test_failed_state_carries_the_agent_error() -> None:
    state = state_from_image(entry=find_image(report=REPORT, image_id="f"), pod_name="p")
    assert state.message == "checksum mismatch"


def test_a_download_waiting_for_room_says_so_with_the_bytes_needed() -> None:
    waiting = {
        **REPORT,
        "caching_images": [
            {
                "image_id": "k",
                "state": "caching",
                "size": None,
                "bytes": 0,
                "waiting_for_room": True,
                "bytes_needed": 8 * 1024 * 1024,
            }
        ],
    }
    state = state_from_image(entry=find_image(report=waiting, image_id="k"), pod_name="p")
    assert (state.phase, state.reason) == ("Caching", "WaitingForRoom")
    assert "8.0 MiB more needed" in state.message and "on p" in state.message
    queued = {**image_report("q", "queued", queue_position=0), "bytes_needed": 1024}
    queued["waiting_for_room"] = True
    state = state_from_image(entry=queued, pod_name="p")
    assert (state.phase, state.reason, state.queue_position) == ("Queued", "WaitingForRoom", 0)
    assert "1.0 KiB more needed" in state.message


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"waiting_for_room": False, "bytes_needed": 10}, id="not-waiting"),
        pytest.param({"waiting_for_room": "yes", "bytes_needed": 10}, id="flag-not-bool"),
        pytest.param({"waiting_for_room": True, "bytes_needed": "10"}, id="bytes-as-text"),
        pytest.param({"waiting_for_room": True, "bytes_needed": True}, id="bytes-as-bool"),
        pytest.param({"waiting_for_room": True, "bytes_needed": -1}, id="negative-bytes"),
        pytest.param({"waiting_for_room": True}, id="no-bytes"),
    ],
)
def test_room_wait_fields_off_contract_are_ignored(fields: dict[str, Any]) -> None:
    entry: Any = {"image_id": "k", "state": "caching", "size": 100, "bytes": 25, **fields}
    state = state_from_image(entry=entry, pod_name="p")
    assert (state.phase, state.reason) == ("Caching", "Downloading")
    assert room_needed(entry) is None


def test_a_failed_download_is_never_shown_waiting_for_room() -> None:
    entry: Any = {"image_id": "f", "state": "failed", "error": "NoRoom: 8 MiB"}
    entry |= {"waiting_for_room": True, "bytes_needed": 10}
    state = state_from_image(entry=entry, pod_name="p")
    assert (state.phase, state.reason, state.message) == (
        "Failed",
        "CachingFailed",
        "NoRoom: 8 MiB",
    )


@pytest.mark.parametrize(
    ("code", "phase", "reason"),
    [
        pytest.param(202, "Queued", "Queued", id="accepted"),
        pytest.param(404, "Failed", "ImageNotFound", id="unknown"),
        pytest.param(400, "Failed", "ImageNotActive", id="not-active"),
        pytest.param(401, "Failed", "Unauthorized", id="unauthorized"),
        pytest.param(403, "Failed", "Unauthorized", id="forbidden"),
        pytest.param(503, "Pending", "AgentUnreachable", id="server-error"),
    ],
)
def test_state_from_put(code: int, phase: str, reason: str) -> None:
    state = state_from_put(status_code=code, pod_name="p")
    assert (state.phase, state.reason) == (phase, reason)


def _single(
    state: TargetState, previous: dict[str, Any] | None = None, now: datetime = NOW
) -> dict[str, Any]:
    target = ResolvedTarget("p", _pod("p", node_name="n1"), state)
    return build_status(
        previous=previous or {}, targets=[target], selector_form=False, generation=3, now=now
    )


def test_single_status_while_caching() -> None:
    state = state_from_image(entry=find_image(report=REPORT, image_id="k"), pod_name="p")
    status = _single(state)
    assert status["phase"] == "Caching"
    assert status["progress"] == {"bytes": 25, "totalBytes": 100, "percent": 25}
    assert status["target"] == {
        "pod": "p",
        "podUID": "uid-p",
        "podIP": "10.0.0.1",
        "nodeName": "n1",
    }
    assert status["observedGeneration"] == 3
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["observedGeneration"] == 3
    assert status["queuedAt"] == status["startedAt"] == "2026-01-02T03:04:05Z"
    assert "cachedAt" not in status


def test_condition_transition_time_is_kept_until_the_status_flips() -> None:
    queued = _single(TargetState(phase="Queued", reason="Queued"))
    later = datetime(2026, 1, 2, 3, 9, 9, tzinfo=UTC)
    caching = _single(TargetState(phase="Caching", reason="Downloading"), queued, later)
    assert (
        caching["conditions"][0]["lastTransitionTime"]
        == queued["conditions"][0]["lastTransitionTime"]
    )
    assert caching["queuedAt"] == queued["queuedAt"]
    cached = _single(TargetState(phase="Cached", reason="Cached"), caching, later)
    assert cached["conditions"][0]["status"] == "True"
    assert cached["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:09:09Z"


def test_selector_status_aggregates_targets() -> None:
    targets = [
        ResolvedTarget("a", _pod("a"), TargetState(phase="Cached", reason="Cached", percent=100)),
        ResolvedTarget(
            "b", _pod("b"), TargetState(phase="Caching", reason="Downloading", percent=40)
        ),
    ]
    status = build_status(previous={}, targets=targets, selector_form=True, generation=1, now=NOW)
    assert status["phase"] == "Caching" and status["reason"] == "Downloading"
    assert status["summary"] == {"total": 2, "queued": 0, "caching": 1, "cached": 1, "failed": 0}
    assert status["progress"] == {"percent": 50}
    assert [(t["pod"], t["phase"], t["percent"]) for t in status["targets"]] == [
        ("a", "Cached", 100),
        ("b", "Caching", 40),
    ]


def test_selector_status_without_pods() -> None:
    status = build_status(previous={}, targets=[], selector_form=True, generation=1, now=NOW)
    assert (status["phase"], status["reason"]) == ("Pending", "NoMatchingPods")
    assert status["summary"]["total"] == 0


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param({}, {"phase": "Queued"}, [("Normal", "Queued")], id="first-queued"),
        pytest.param({"phase": "Queued"}, {"phase": "Queued"}, [], id="no-change"),
        pytest.param(
            {"phase": "Caching"}, {"phase": "Cached"}, [("Normal", "Cached")], id="cached"
        ),
        pytest.param(
            {"phase": "Queued"},
            {"phase": "Failed", "reason": "ImageNotFound"},
            [("Warning", "Failed")],
            id="failed",
        ),
        pytest.param(
            {},
            {"phase": "Failed", "reason": "Unauthorized"},
            [("Warning", "Unauthorized")],
            id="unauthorized",
        ),
        pytest.param(
            {"phase": "Pending", "reason": "PodNotFound"},
            {"phase": "Pending", "reason": "AgentUnreachable"},
            [("Warning", "AgentUnreachable")],
            id="pending-reason-change",
        ),
    ],
)
def test_status_events(
    previous: dict[str, Any], current: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    events = status_events(previous=previous, current=current)
    assert [(e.type, e.reason) for e in events] == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({"a": 1}, {"a": 1}, {}, id="unchanged"),
        pytest.param({"a": 1}, {"a": 2}, {"a": 2}, id="changed"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="removed"),
        pytest.param({"p": {"x": 1, "y": 2}}, {"p": {"x": 1}}, {"p": {"y": None}}, id="nested"),
        pytest.param({"l": [1, 2]}, {"l": [1]}, {"l": [1]}, id="lists-replaced"),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_patch(old=old, new=new) == expected
