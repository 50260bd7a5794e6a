"""Unit tests of the operator's I/O-side parts with fakes: the shared per-agent poller, the
reconciler's decisions against a fake agent, the token file, and the settings.

Covers: at most one ``GET /v2/cache`` per agent per interval however many callers; errors
shared too; PUT only when needed (restart-safe, no double PUT on a stale report); Recaching;
backoff on an unreachable agent; the token re-read on change; flags over environment.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagecache.controller.agents import TokenFile
from imagecache.controller.errors import AgentUnreachable
from imagecache.controller.polling import AgentPollers
from imagecache.controller.reconciling import Reconciler, RequestMemory
from imagecache.controller.settings import SettingsError, parse_settings
from imagecache.core.targets import PodInfo
from imagecache.core.wire import CacheListing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeAgents:
    """An agent that queues on PUT and reports what it has."""

    def __init__(self) -> None:
        self.gets = 0
        self.puts: list[str] = []
        self.cached: set[str] = set()
        self.queued: list[str] = []
        self.down = False

    async def put_image(self, endpoint: str, image: str) -> int:
        if self.down:
            raise AgentUnreachable("refused", endpoint=endpoint)
        self.puts.append(image)
        if image not in self.cached and image not in self.queued:
            self.queued.append(image)
        return 202

    async def delete_image(self, endpoint: str, image: str) -> int:
        self.cached.discard(image)
        return 204

    async def cache_report(self, endpoint: str) -> CacheListing:
        self.gets += 1
        await asyncio.sleep(0)
        if self.down:
            raise AgentUnreachable("refused", endpoint=endpoint)
        return {
            "cached_images": [{"image_id": i, "size": 1} for i in sorted(self.cached)],
            "queued_images": list(self.queued),
            "caching_images": [],
            "failed_images": [],
        }


async def test_one_get_per_interval_for_all_callers() -> None:
    agents, clock = FakeAgents(), FakeClock()
    pollers = AgentPollers(agents=agents, interval=2.0, clock=clock)
    await asyncio.gather(*(pollers.snapshot("http://a") for _ in range(50)))
    assert agents.gets == 1
    clock.now += 1.9
    await pollers.snapshot("http://a")
    assert agents.gets == 1
    clock.now += 0.1
    await asyncio.gather(*(pollers.snapshot("http://a") for _ in range(50)))
    assert agents.gets == 2
    await pollers.snapshot("http://b")
    assert agents.gets == 3


async def test_a_failed_poll_is_shared_too() -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.down = True
    pollers = AgentPollers(agents=agents, interval=2.0, clock=clock)
    snaps = await asyncio.gather(*(pollers.snapshot("http://a") for _ in range(10)))
    assert agents.gets == 1 and all(s.error is not None for s in snaps)


def _reconciler(agents: FakeAgents, clock: FakeClock, tmp_path: Path) -> Reconciler:
    settings = parse_settings(
        [
            "--poll-interval",
            "1",
            "--recheck-interval",
            "10",
            "--retry-backoff",
            "1",
            "--retry-backoff-cap",
            "4",
        ]
    )
    pollers = AgentPollers(agents=agents, interval=1.0, clock=clock)
    return Reconciler(
        settings=settings,
        agents=agents,
        pollers=pollers,
        monotonic=clock,
        wallclock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


POD = PodInfo(namespace="ns", name="p", uid="u1", ip="10.0.0.1", phase="Running")
SPEC = {"image": "img", "pod": "p"}


async def _pass(rec: Reconciler, status: dict[str, Any], memory: RequestMemory) -> dict[str, Any]:
    outcome = await rec.reconcile(spec=SPEC, status=status, generation=1, pods=[POD], memory=memory)
    return outcome.status


async def test_put_once_then_track_then_recache(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    rec, memory = _reconciler(agents, clock, tmp_path), RequestMemory()
    status = await _pass(rec, {}, memory)
    assert status["phase"] == "Queued" and agents.puts == ["img"]
    assert memory.quiet_until == 0.0  # in flight: the next tick polls
    status = await _pass(rec, status, memory)  # same (stale) report: no second PUT
    assert agents.puts == ["img"] and status["phase"] == "Queued"
    agents.queued.clear()
    agents.cached.add("img")
    clock.now += 1
    status = await _pass(rec, status, memory)
    assert status["phase"] == "Cached"
    assert memory.quiet_until == clock.now + 10  # settled: rest until the recheck is due
    gets = agents.gets
    clock.now += 5
    status = await _pass(rec, status, memory)  # before the recheck interval: no GET at all
    assert agents.gets == gets
    agents.cached.clear()
    clock.now += 10
    outcome = await rec.reconcile(spec=SPEC, status=status, generation=1, pods=[POD], memory=memory)
    assert outcome.status["phase"] == "Queued"
    assert [e.reason for e in outcome.events] == ["Recaching"]
    assert agents.puts == ["img", "img"]


async def test_restart_with_a_cached_status_checks_without_putting(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.cached.add("img")
    rec = _reconciler(agents, clock, tmp_path)
    previous = {
        "phase": "Cached",
        "reason": "Cached",
        "target": {"pod": "p", "podUID": "u1", "podIP": "10.0.0.1"},
    }
    outcome = await rec.reconcile(
        spec=SPEC, status=previous, generation=1, pods=[POD], memory=RequestMemory()
    )
    assert outcome.status["phase"] == "Cached" and agents.puts == [] and outcome.events == []


async def test_unreachable_agent_backs_off(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.down = True
    rec, memory = _reconciler(agents, clock, tmp_path), RequestMemory()
    status = await _pass(rec, {}, memory)
    assert (status["phase"], status["reason"]) == ("Pending", "AgentUnreachable")
    clock.now += 1.5
    status = await _pass(rec, status, memory)  # second failure: backoff 2 s from now
    gets = agents.gets
    clock.now += 1.5
    await _pass(rec, status, memory)
    assert agents.gets == gets  # still backing off
    agents.down = False
    clock.now += 1
    status = await _pass(rec, status, memory)
    assert status["phase"] == "Queued"


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
    assert parse_settings([]).poll_interval == 7
    assert parse_settings([]).namespaces == ["a", "b"]
    assert parse_settings(["--poll-interval", "3"]).poll_interval == 3


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        pytest.param(["--agent-port", "0"], "agent_port", id="port"),
        pytest.param(["--poll-interval", "-1"], "poll_interval", id="poll"),
        pytest.param(["--max-concurrency", "x"], "max_concurrency", id="not-a-number"),
    ],
)
def test_bad_settings_name_the_setting(argv: list[str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        parse_settings(argv)
