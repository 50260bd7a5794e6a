"""Issue 14: the CPU of one reconcile-loop tick over resting requests (target < 20 ms at 10,000).

In one process, no network: the real `ReconcileLoop` and `Reconciler` over the unit tests' fake
agents and fake API (`tests.support.operator_world`), on a fake clock. `--requests` requests
(spread over `--agents` pods) are taken to Cached; then the clock advances one poll interval
per tick, without reaching the recheck interval, and the CPU time of `--ticks` ticks
(``time.process_time``) is measured. For comparison, the same is measured with every request
marked dirty each tick (what the old loop did on every tick: plan and reconcile all of them).

    .venv/bin/python bench/operator_tick.py [--requests 10000] [--agents 500] [--ticks 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # the repository root, for tests.support

from tests.support.operator_world import World, pod  # noqa: E402


async def measure(requests: int, agents: int, ticks: int) -> None:
    world = World(recheck_interval=3600, poll_interval=2)
    world.set_pods([pod(f"p{n}", ip=f"10.0.{n // 250}.{n % 250 + 1}") for n in range(agents)])
    for n in range(requests):
        image = f"img-{n}"
        world.add(f"r{n}", {"image": image, "pod": f"p{n % agents}"})
        world.agents.cached.add(image)
    started = time.process_time()
    await world.tick()
    settle = time.process_time() - started
    cached = sum(1 for n in range(requests) if world.status(f"r{n}").get("phase") == "Cached")
    print(
        f"inputs: requests={requests} agents={agents} ticks={ticks}; "
        f"{cached} Cached after the first pass ({settle:.2f} s CPU)"
    )
    loop = world.loop
    started = time.process_time()
    for _ in range(ticks):
        world.clock.now += 2.0
        await loop.tick()
    idle = (time.process_time() - started) / ticks
    print(f"idle tick over {requests} resting requests: {idle * 1000:.3f} ms CPU (target < 20)")
    keys = list(loop.observed.requests)
    rounds = max(1, ticks // 10)
    started = time.process_time()
    for _ in range(rounds):
        world.clock.now += 2.0
        for key in keys:
            loop.queue.add(key)
        await loop.flush()
    everything = (time.process_time() - started) / rounds
    print(
        f"a tick that reconciles all {requests} (every key dirty, as the old loop did every "
        f"tick): {everything * 1000:.1f} ms CPU"
    )
    print(f"ratio idle tick / everything: {idle / everything:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="reconcile-loop tick CPU (issue 14)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--ticks", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.agents, args.ticks))


if __name__ == "__main__":
    main()
