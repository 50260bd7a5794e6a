"""Unit tests of the operator's I/O-side parts with fakes: the reconciler's decisions against a
fake agent, the reconcile loop against a fake write port, the token file, and the settings.

Covers: PUT only when needed (restart-safe, no double PUT on a stale report); Recaching; backoff
on an unreachable agent; Cached survives an agent outage (AgentReachable=False, one Warning);
at most one ``GET /v2/cache`` per agent per tick however many requests; a failed status write is
retried on the next tick and never stops tracking; the diff is against the live status (an
external edit is corrected); eviction gives up after evict_timeout on any error, concurrently;
the token re-read on change; flags over environment.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from imagecache.controller.agents import TokenFile
from imagecache.controller.settings import SettingsError, parse_settings
from imagecache.core.planning import plan_tick
from imagecache.core.wire import CacheListing
from tests.support.operator_world import World
from tests.support.operator_world import pod as _pod
from tests.support.operator_world import request as _request


async def test_put_once_then_track_then_recache() -> None:
    world = World()
    world.add("r")
    await world.tick()
    assert world.status()["phase"] == "Queued" and world.agents.puts == ["img"]
    await world.tick()  # the report now shows it queued: no second PUT
    assert world.agents.puts == ["img"] and world.status()["phase"] == "Queued"
    world.agents.finish()
    await world.tick()
    assert world.status()["phase"] == "Cached"
    gets = sum(world.agents.gets.values())
    await world.tick(5)  # before the recheck interval: no GET at all
    assert sum(world.agents.gets.values()) == gets
    world.agents.cached.clear()
    world.writes.events.clear()
    await world.tick(10)
    assert world.status()["phase"] == "Queued"
    assert [reason for _, reason in world.writes.events] == ["Recaching"]
    assert world.agents.puts == ["img", "img"]
    assert world.agents.pod_uids and None not in world.agents.pod_uids, "each call names its pod"


async def test_restart_with_a_cached_status_checks_without_putting() -> None:
    world = World()
    world.add("r")
    world.agents.cached.add("img")
    cached = {
        "phase": "Cached",
        "reason": "Cached",
        "target": {"pod": "p", "podUID": "u-p", "podIP": "10.0.0.1"},
    }
    world.edit("r", cached, rv="2")
    await world.tick()
    assert world.status()["phase"] == "Cached" and world.agents.puts == []
    assert world.writes.events == []


async def test_unreachable_agent_backs_off_then_heals() -> None:
    world = World()
    world.add("r")
    world.agents.down = True
    await world.tick()
    assert (world.status()["phase"], world.status()["reason"]) == ("Pending", "AgentUnreachable")
    await world.tick(1.5)  # second failure: backoff 2 s from now
    gets = sum(world.agents.gets.values())
    await world.tick(1.5)
    assert sum(world.agents.gets.values()) == gets  # still backing off
    world.agents.down = False
    await world.tick(1)
    assert world.status()["phase"] == "Queued"


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


async def test_cached_survives_an_agent_outage() -> None:
    world = World()
    world.add("r")
    world.agents.cached.add("img")
    await world.tick()
    assert world.status()["phase"] == "Cached"
    assert _condition(world.status(), "AgentReachable")["status"] == "True"
    world.agents.down = True
    world.writes.events.clear()
    await world.tick(11)  # recheck due: the agent does not answer
    status = world.status()
    assert (status["phase"], status["reason"]) == ("Cached", "Cached")
    assert _condition(status, "Cached")["status"] == "True"
    reach = _condition(status, "AgentReachable")
    assert (reach["status"], reach["reason"]) == ("False", "AgentUnreachable")
    assert world.writes.events == [("Warning", "AgentUnreachable")]
    await world.tick(2)
    await world.tick(4)
    assert world.writes.events == [("Warning", "AgentUnreachable")]  # one event, not one per try
    world.agents.down = False
    await world.tick(5)
    assert _condition(world.status(), "AgentReachable")["status"] == "True"
    assert world.status()["phase"] == "Cached" and world.agents.puts == []


async def test_one_get_per_agent_per_tick_for_many_requests() -> None:
    world = World()
    world.set_pods([_pod("p"), _pod("q", ip="10.0.0.2")])
    for n in range(20):
        world.add(f"r{n}", {"image": f"img-{n}", "pod": "p" if n % 2 else "q"})
    for _ in range(3):
        await world.tick()
        assert all(count <= 1 for count in world.agents.gets.values())
        world.agents.gets.clear()


@pytest.mark.parametrize("code", [422, 409, 503, None])
async def test_a_failed_status_write_is_retried_on_the_next_tick(code: int | None) -> None:
    world = World()
    world.add("r")
    world.writes.fail = [code or 0] * 3  # three tries in a row fail
    await world.tick()
    assert world.status() == {} and len(world.writes.fail) == 2
    key = ("ns", "r")
    assert world.loop.queue.failures(key) == 1 and world.loop.queue.due_at(key) == 102.0
    for _ in range(4):
        await world.tick(4)  # past each backoff
    assert world.writes.fail == [] and world.status()["phase"] == "Queued"
    assert world.loop.queue.failures(key) == 0  # a success resets the backoff
    world.agents.finish()
    await world.tick(4)
    assert world.status()["phase"] == "Cached"
    failed = world.metrics.registry.get_sample_value(
        "imagecache_operator_api_writes_total", {"kind": "status", "outcome": str(code or 0)}
    )
    assert failed == 3


async def test_an_external_edit_of_the_status_is_corrected() -> None:
    world = World()
    world.add("r")
    world.agents.cached.add("img")
    await world.tick()
    assert world.status()["phase"] == "Cached"
    edited = {**world.status(), "phase": "Failed", "message": "edited by hand"}
    world.edit("r", edited, rv="99")
    await world.tick()
    assert world.status()["phase"] == "Cached"
    assert world.status()["message"] != "edited by hand"


async def test_a_lagging_watch_does_not_cause_duplicate_writes() -> None:
    world = World()
    world.add("r")
    world.agents.cached.add("img")
    world.lag = True
    await world.tick()
    await world.tick()
    await world.tick()
    assert len(world.writes.patches) == 1


async def test_progress_only_changes_are_throttled() -> None:
    world = World()
    world.add("r")
    reports = iter([10, 20, 30, 40, 50, 60, 70])

    async def caching(endpoint: str, *, pod_uid: str | None = None) -> CacheListing:
        done = next(reports)
        return {
            "cached_images": [],
            "queued_images": ["img"],
            "caching_images": [{"image_id": "img", "size": 100, "bytes": done}],
            "failed_images": [],
        }

    world.agents.cache_report = caching  # type: ignore[method-assign]
    for _ in range(7):
        await world.tick(1.0)
    percents = [p["progress"]["percent"] for p in world.writes.patches if "progress" in p]
    # First at once (a phase change), then status_interval later with the answer known then
    # (that tick's own GET is still in flight when the write is due).
    assert percents == [10, 50]


async def test_eviction_gives_up_after_evict_timeout_concurrently() -> None:
    world = World(evict_timeout=0.2)
    pods = [_pod("a"), _pod("b", ip="10.0.0.2")]
    world.agents.hang_deletes = True
    request = _request(spec={"image": "img", "podSelector": {"matchLabels": {}}})
    started = world.wallclock()
    outcome = await world.reconciler.evict(request=request, pods=pods, deletion_started=started)
    assert sorted(world.agents.deletes) == ["http://10.0.0.1:9292", "http://10.0.0.2:9292"]
    assert outcome.done and [e.reason for e in outcome.events] == ["EvictionAbandoned"]


async def test_eviction_retries_before_the_timeout_then_gives_up_on_any_error() -> None:
    world = World(evict_timeout=30)
    world.agents.down = True
    request = _request()
    now = world.wallclock()
    early = await world.reconciler.evict(request=request, pods=[_pod()], deletion_started=now)
    assert not early.done and early.retry_in > 0
    late = await world.reconciler.evict(
        request=request, pods=[_pod()], deletion_started=now - timedelta(seconds=31)
    )
    assert late.done and late.events[0].type == "Warning"


def test_not_ready_pod_is_not_planned() -> None:
    pod = dataclasses.replace(_pod(), ready=False)
    plan = plan_tick(
        requests=[_request()],
        pods={"ns": [pod]},
        schedules={},
        now=0.0,
        default_port=9292,
        recheck_interval=10,
    )
    assert plan.polls == frozenset()
    assert plan.requests[0].targets[0].waiting is not None


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = TokenFile(path)
    assert token.current() is None
    path.write_text("one\n")
    assert token.current() == "one"
    path.write_text("second\n")
    assert token.current() == "second"


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGECACHE_OPERATOR_POLL_INTERVAL", "7")
    monkeypatch.setenv("IMAGECACHE_OPERATOR_NAMESPACES", "a, b")
    monkeypatch.setenv("IMAGECACHE_OPERATOR_LEADER_ELECTION", "true")
    assert parse_settings([]).poll_interval == 7
    assert parse_settings([]).namespaces == ["a", "b"]
    assert parse_settings([]).leader_election is True
    assert parse_settings(["--poll-interval", "3"]).poll_interval == 3


def test_lease_namespace_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "imagecache-system")
    assert parse_settings([]).lease_namespace == "imagecache-system"
    assert parse_settings([]).lease_name == "imagecache-operator"


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        pytest.param(["--agent-port", "0"], "agent_port", id="port"),
        pytest.param(["--poll-interval", "-1"], "poll_interval", id="poll"),
        pytest.param(["--max-concurrency", "x"], "max_concurrency", id="not-a-number"),
        pytest.param(["--lease-renew-deadline", "20"], "lease timings", id="lease-timings"),
    ],
)
def test_bad_settings_name_the_setting(argv: list[str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        parse_settings(argv)


async def test_the_loop_is_stuck_when_no_tick_completes_in_time() -> None:
    world = World(poll_interval=1, request_timeout=30)
    assert not world.loop.stuck()  # not started yet
    world.loop.started_at = world.clock.now
    world.clock.now += 9.9
    assert not world.loop.stuck()
    world.clock.now += 0.2  # 10 s without a tick (agents' timeouts do not count)
    assert world.loop.stuck()
    await world.tick(0)
    assert not world.loop.stuck()
