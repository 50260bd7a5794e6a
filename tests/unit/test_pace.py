"""The poll pace (issue 14): agent polls spaced further apart while the operator is saturated.

The pure policy (`core.pace.next_stretch`), the sampling of `controller.pace.PollPace` (the
loop's lag against a really blocked event loop; the busy fraction from the process's CPU
clock), and the poller following the stretched interval.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from imagecache.controller.pace import PollPace
from imagecache.core.pace import Load, PacePolicy, next_stretch
from tests.support.operator_world import World

POLICY = PacePolicy(high=0.05, low=0.01, busy_high=0.9, busy_low=0.7, up=1.5, down=1.25, cap=8.0)


@pytest.mark.parametrize(
    ("stretch", "load", "expected"),
    [
        pytest.param(1.0, Load(lag=0.2), 1.5, id="lagging-stretches"),
        pytest.param(1.0, Load(lag=0.0, busy=0.95), 1.5, id="busy-on-time-stretches"),
        pytest.param(6.0, Load(lag=0.2), 8.0, id="capped"),
        pytest.param(4.0, Load(lag=0.001, busy=0.2), 3.2, id="idle-relaxes"),
        pytest.param(4.0, Load(lag=0.001, busy=0.8), 4.0, id="on-time-but-busy-stays"),
        pytest.param(1.1, Load(lag=0.0), 1.0, id="never-below-1"),
        pytest.param(3.0, Load(lag=0.03), 3.0, id="between-stays"),
    ],
)
def test_next_stretch(stretch: float, load: Load, expected: float) -> None:
    assert next_stretch(stretch, load, POLICY) == pytest.approx(expected)


def test_a_policy_must_make_sense() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        PacePolicy(high=0.01, low=0.05)
    with pytest.raises(ValueError, match="busy_low <= busy_high"):
        PacePolicy(busy_high=0.5, busy_low=0.8)
    with pytest.raises(ValueError, match=">= 1"):
        PacePolicy(up=0.5)


def test_a_cap_of_one_never_stretches() -> None:
    pace = PollPace(2.0, policy=PacePolicy(cap=1.0))
    for _ in range(10):
        pace.observe(Load(lag=1.0, busy=1.0))
    assert pace.interval == 2.0


async def test_a_saturated_process_stretches_though_its_loop_is_on_time() -> None:
    """The busy fraction comes from the process's CPU clock, over the last second."""
    cpu = 0.0
    saturated = True

    def cpu_time() -> float:  # a core's worth of CPU per wall second while saturated
        nonlocal cpu
        cpu += 0.1 if saturated else 0.01
        return cpu

    pace = PollPace(0.5, policy=POLICY, cpu_time=cpu_time)
    sampling = asyncio.create_task(pace.run())
    try:
        for _ in range(100):  # a few samples of 0.1 s; bounded at 5 s
            if pace.stretch > 1.0:
                break
            await asyncio.sleep(0.05)
        assert pace.stretch > 1.0 and pace.busy > POLICY.busy_high
        saturated = False
        for _ in range(300):  # the window drains in 1 s, then it relaxes; bounded at 15 s
            if pace.stretch == 1.0:
                break
            await asyncio.sleep(0.05)
        assert pace.stretch == 1.0 and pace.busy < POLICY.busy_low
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)


def _busy(seconds: float) -> None:
    """Hold the CPU (and so the event loop) for `seconds`, as a burst of work would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_a_blocked_loop_stretches_the_interval_and_it_relaxes_after() -> None:
    pace = PollPace(0.5, policy=POLICY)
    sampling = asyncio.create_task(pace.run())
    try:
        for _ in range(4):  # CPU-bound work holding the loop: every timer fires late
            await asyncio.sleep(0.12)
            _busy(0.2)
        assert pace.stretch > 1.0 and pace.interval > 0.5
        for _ in range(200):  # relaxing takes about 10 samples of 0.1 s; bounded at 10 s
            if pace.stretch == 1.0:
                break
            await asyncio.sleep(0.05)
        assert pace.stretch == 1.0
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)


async def _gets_over(world: World, seconds: int) -> int:
    before = sum(world.agents.gets.values())
    for _ in range(seconds):
        await world.tick(1.0)
    return sum(world.agents.gets.values()) - before


async def test_the_poller_follows_the_stretched_interval() -> None:
    world = World(poll_interval=1)
    world.add("r")
    await world.tick()
    assert world.status()["phase"] == "Queued"  # the fake agent never finishes it
    normal = await _gets_over(world, 16)
    world.loop.pace.stretch = 4.0
    await world.tick(4.0)  # the GET scheduled at the old pace
    stretched = await _gets_over(world, 16)
    assert normal >= 14
    assert stretched <= 5, (normal, stretched)
    assert world.metrics.poll_stretch.collect()[0].samples[0].value == 4.0
