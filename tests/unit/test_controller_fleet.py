"""Unit tests of the loop at fleet scale, over fakes on a fake clock (`support.operator_world`).

Covers: a late watch echo never makes a transition be written or its event posted twice (one
Cached event per request); queue-position changes post no event and are written at most every
status_interval; a repeated identical event raises the count of the existing Event; a resting
request costs no reconcile and no GET; a malformed agent listing fails that agent's targets
(AgentReachable=False, AgentInvalidAnswer), never the others; no PUT after the finalizer marked
the request (a report in flight when it did); a recheck confirms the request exists before it
re-PUTs (404: forgotten); the resync forgets requests and pods deleted during a watch gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from imagecache.controller.reconciling import Reconciler
from imagecache.core.wire import CacheListing
from tests.support.operator_world import World, pod, request


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def _reasons(world: World) -> list[str]:
    return [reason for _, reason in world.writes.events]


async def test_a_late_echo_never_writes_a_transition_twice() -> None:
    world = World()
    world.add("r")
    world.lag = True  # the watch holds our writes back
    await world.tick()
    assert world.status()["phase"] == "Queued"
    world.agents.finish()
    await world.tick()
    assert world.status()["phase"] == "Cached"
    # The echo of the Queued write arrives after the Cached write was made, then the Cached one.
    world.lag = False
    world.deliver(1)  # the index now shows the Queued status, older than our Cached write
    assert world.loop.observed.request(("ns", "r")).status["phase"] == "Queued"  # type: ignore[union-attr]
    world.loop.queue.add(("ns", "r"))  # even reconciled against that late echo...
    await world.tick(0.5)
    world.deliver()
    await world.tick(0.5)
    phases = [p["phase"] for p in world.writes.patches if "phase" in p]
    assert phases == ["Queued", "Cached"]  # ...each transition is written once
    assert _reasons(world).count("Cached") == 1


async def test_the_late_echo_of_an_earlier_write_is_ignored() -> None:
    world = World()
    world.add("r")
    world.lag = True
    await world.tick()
    world.agents.finish()
    await world.tick()
    writes = len(world.writes.patches)
    world.lag = False
    world.deliver()  # Queued (older than our Cached write), then Cached: nothing to do
    await world.tick(0.5)
    assert len(world.writes.patches) == writes
    assert _reasons(world) == ["Queued", "Cached"]


async def test_queue_positions_post_no_events_and_are_throttled() -> None:
    world = World(status_interval=2, queue_position_interval=5)
    world.add("r")
    positions = iter(range(8, 0, -1))

    async def report(endpoint: str, *, pod_uid: str | None = None) -> CacheListing:
        ahead = [f"other-{n}" for n in range(next(positions, 0))]
        return {"cached_images": [], "queued_images": [*ahead, "img"]}

    world.agents.cache_report = report  # type: ignore[method-assign]
    world.agents.put_image = _accepted  # type: ignore[method-assign]
    for _ in range(8):
        await world.tick(1.0)
    assert _reasons(world) == ["Queued"]
    positions_written = [p["queuePosition"] for p in world.writes.patches if "queuePosition" in p]
    assert len(positions_written) == 2  # the first, and one status_interval later


async def _accepted(endpoint: str, image: str, **_: Any) -> int:
    return 202


async def test_a_repeated_event_raises_the_count_of_the_existing_event() -> None:
    world = World()
    world.add("r")
    world.agents.cached.add("img")
    await world.tick()
    for _ in range(2):  # two outages, each the same warning
        world.agents.down = True
        await world.tick(11)
        world.agents.down = False
        await world.tick(5)
        assert _condition(world.status(), "AgentReachable")["status"] == "True"
    assert _reasons(world) == ["Cached", "AgentUnreachable"]  # one Event object...
    assert sorted(world.writes.event_counts.values()) == [1, 2]  # ...whose count went to 2


async def test_a_resting_request_costs_no_reconcile_and_no_get() -> None:
    world = World()
    for n in range(50):
        world.add(f"r{n}", {"image": f"img-{n}", "pod": "p"})
        world.agents.cached.add(f"img-{n}")
    await world.tick()
    assert all(world.status(f"r{n}")["phase"] == "Cached" for n in range(50))
    calls = 0
    reconcile = world.reconciler.reconcile

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await reconcile(*args, **kwargs)

    world.reconciler.reconcile = counting  # type: ignore[method-assign]
    gets = sum(world.agents.gets.values())
    for _ in range(5):
        await world.tick(1.0)
    assert calls == 0 and sum(world.agents.gets.values()) == gets


async def test_a_malformed_listing_fails_that_agent_only() -> None:
    world = World()
    world.set_pods([pod("q", ip="10.0.0.2")])
    world.add("good", {"image": "img", "pod": "p"})
    world.add("bad", {"image": "img", "pod": "q"})
    world.agents.cached.add("img")
    world.agents.invalid.add("http://10.0.0.2:9292")
    await world.tick()
    assert world.status("good")["phase"] == "Cached"
    bad = world.status("bad")
    reach = _condition(bad, "AgentReachable")
    assert (bad["phase"], reach["status"], reach["reason"]) == (
        "Pending",
        "False",
        "AgentInvalidAnswer",
    )
    assert "cached_images[0]" in reach["message"]
    assert world.loop.last_tick_at == world.clock.now  # the ticks went on


async def test_no_put_after_the_finalizer_marked_the_request() -> None:
    world = World()
    world.add("r")
    world.agents.gate = asyncio.Event()  # the report is in flight...
    ticking = asyncio.create_task(world.tick())
    await asyncio.sleep(0.05)
    await world.reconciler.evict(request=request(), pods=[pod()], deletion_started=None)
    world.agents.gate.set()  # ...and arrives after the finalizer's DELETE
    await ticking
    assert world.agents.puts == [] and world.reconciler.puts_refused == 1


async def test_a_recheck_confirms_the_request_before_re_putting() -> None:
    world = World(reads=True)
    world.add("r")
    world.agents.cached.add("img")
    await world.tick()
    assert world.status()["phase"] == "Cached"
    world.delete_unseen("r")  # deleted while the watch was down
    world.agents.cached.clear()  # and the image evicted from the agent
    await world.tick(11)  # the recheck finds the image gone
    assert world.agents.puts == []
    assert world.reads is not None and world.reads.gets == ["r"]
    assert world.loop.observed.request(("ns", "r")) is None  # forgotten
    await world.tick(11)
    assert world.agents.puts == [] and world.reads.gets == ["r"]


async def test_the_resync_forgets_requests_and_pods_deleted_during_a_watch_gap() -> None:
    world = World(reads=True)
    world.set_pods([pod("q", ip="10.0.0.2")])
    world.add("gone", {"image": "a", "pod": "p"})
    world.add("on-q", {"image": "b", "pod": "q"})
    world.agents.cached.update({"a", "b"})
    await world.tick()
    assert world.status("on-q")["phase"] == "Cached"
    world.delete_unseen("gone")
    del world.api_pods["q"]  # pod q deleted, unseen too
    await world.loop.resync()
    await world.tick(0.5)
    assert world.loop.observed.request(("ns", "gone")) is None
    status = world.status("on-q")
    assert (status["phase"], status["reason"]) == ("Pending", "PodNotFound")


def test_the_reconciler_remembers_tombstones_boundedly() -> None:
    world = World()
    reconciler: Reconciler = world.reconciler
    reconciler.tombstone("u1")
    assert reconciler.deleted("u1") and not reconciler.deleted("u2")


class _PerAgentListings:
    """Agents with listings of their own (by endpoint): a PUT queues the image there."""

    def __init__(self, cached: dict[str, set[str]]) -> None:
        self.cached = cached
        self.queued: dict[str, list[str]] = {}
        self.sources: dict[str, str | None] = {}

    async def put_image(
        self, endpoint: str, image: str, *, source: str | None = None, **_: Any
    ) -> int:
        self.queued.setdefault(endpoint, []).append(image)
        self.sources[endpoint] = source
        return 202

    async def delete_image(self, endpoint: str, image: str, **_: Any) -> int:
        return 204

    async def cache_report(self, endpoint: str, **_: Any) -> CacheListing:
        await asyncio.sleep(0)
        cached = [{"image_id": i, "size": 1} for i in sorted(self.cached.get(endpoint, set()))]
        return {"cached_images": cached, "queued_images": list(self.queued.get(endpoint, []))}

    def finish(self, endpoint: str) -> None:
        self.cached.setdefault(endpoint, set()).update(self.queued.pop(endpoint, []))


async def test_a_peer_s_load_from_one_request_limits_another_and_is_released() -> None:
    """Fan-out loads count across requests: a peer serving one request's transfer has no slot
    for another's (width 1) until that transfer ends, and the load is released on delete."""
    peer, b, c = (f"http://10.0.0.{n}:9292" for n in (1, 2, 3))
    agents = _PerAgentListings({peer: {"img"}})
    world = World(agents=agents)
    world.set_pods(
        [
            dataclasses.replace(pod(name, ip), labels={"app": "glance", "group": group})
            for name, ip, group in (
                ("a", "10.0.0.1", "both"),
                ("b", "10.0.0.2", "one"),
                ("c", "10.0.0.3", "two"),
            )
        ]
    )

    def spec(group: str) -> dict[str, Any]:
        values = ["both", group]
        selector = {"matchExpressions": [{"key": "group", "operator": "In", "values": values}]}
        return {"image": "img", "podSelector": selector, "fanout": {"width": 1}}

    world.add("one", spec("one"))  # targets a (holds the image) and b
    await world.tick()
    await world.tick()
    assert agents.sources.get(b) == peer  # b fills from a: a's one slot is taken
    world.add("two", spec("two"))  # targets a and c
    await world.tick()
    await world.tick()
    assert c not in agents.queued  # waits: a serves one's transfer
    assert world.status("two")["targets"][1]["reason"] == "WaitingForPeer"
    deleted = world.body("one")
    world.writes.objects.pop(("ns", "one"))
    world.loop.observe_request("DELETED", deleted)
    await world.tick()
    await world.tick()
    assert agents.sources.get(c) == peer  # the deleted request's load is gone
