#!/usr/bin/env python3
"""SPEC §7 row 4: `PUT` throughput for distinct images vs a bare aiohttp handler answering 202.

Both servers are separate processes on loopback: the agent (file upstream holding COUNT tiny
images, so each PUT does its real work: id check, upstream metadata, durable enqueue) and a
bare aiohttp app whose only route answers `PUT /v2/cache/{id}` with 202. The same client (one
aiohttp session, CONCURRENCY requests in flight) sends COUNT PUTs of distinct ids to each, in
the same run; every answer must be 202. The two alternate for `--rounds` rounds; each round
starts a fresh agent on an empty cache directory, measures the bare server while that agent is
idle, then the agent, then kills the agent (so its background downloads of the images just
queued never slow the next contender). The median requests/s of each is compared.

Usage: python bench/put_rate.py [--count 10000] [--concurrency 64] [--rounds 3]
       python bench/put_rate.py --serve-bare HOST:PORT   (internal: the bare server)
Target: agent ≥ 50 % of the bare handler's requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web
from common import AgentProcess, free_port, print_report


def serve_bare(listen: str) -> None:
    host, port = listen.rsplit(":", 1)

    async def queue(request: web.Request) -> web.Response:
        return web.Response(status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_put("/v2/cache/{id}", queue)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-bare", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise TimeoutError("the bare server did not start")


async def hammer(url: str, ids: list[str], concurrency: int) -> tuple[float, Counter[int]]:
    """Send one PUT per id with `concurrency` in flight; seconds taken and status counts."""
    statuses: Counter[int] = Counter()
    position = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal position
            while position < len(ids):
                image_id = ids[position]
                position += 1
                async with session.put(f"{url}/v2/cache/{image_id}") as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="PUTs per server (default 10000)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="requests in flight (default 64)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--serve-bare", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    workdir = Path(tempfile.mkdtemp(prefix="imagecache-bench-"))
    source = workdir / "source"
    source.mkdir()
    ids = [f"rate-{n:06d}" for n in range(args.count)]
    for image_id in ids:
        (source / image_id).write_bytes(b"r" * 512)
    bare, bare_url = start_bare()
    bare_rates: list[float] = []
    agent_rates: list[float] = []
    bare_statuses: Counter[int] = Counter()
    agent_statuses: Counter[int] = Counter()
    try:
        for round_ in range(args.rounds):
            agent = AgentProcess(
                cache_dir=workdir / f"cache-{round_}",
                upstream=f"file://{source}",
                extra_args=["--log-level", "WARNING"],
            )
            agent.start()
            try:
                seconds, statuses = asyncio.run(hammer(bare_url, ids, args.concurrency))
                bare_rates.append(args.count / seconds)
                bare_statuses += statuses
                seconds, statuses = asyncio.run(hammer(agent.url, ids, args.concurrency))
                agent_rates.append(args.count / seconds)
                agent_statuses += statuses
            finally:
                agent.kill()
            print(
                f"round {round_ + 1}: bare {bare_rates[-1]:.0f}, agent {agent_rates[-1]:.0f} req/s"
            )
    finally:
        bare.terminate()
        bare.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    bare_rps, agent_rps = statistics.median(bare_rates), statistics.median(agent_rates)
    print_report(
        "PUT rate: agent vs bare aiohttp 202 handler",
        {
            "PUTs per server per round": args.count,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "client": "aiohttp, one session",
        },
        {
            "bare statuses": dict(bare_statuses),
            "agent statuses": dict(agent_statuses),
            "bare req/s (each round)": ", ".join(f"{r:.0f}" for r in bare_rates),
            "agent req/s (each round)": ", ".join(f"{r:.0f}" for r in agent_rates),
            "bare median": f"{bare_rps:.0f} req/s",
            "agent median": f"{agent_rps:.0f} req/s",
        },
        ("agent req/s / bare req/s (median)", agent_rps / bare_rps, "≥ 0.50"),
    )
    if set(agent_statuses) != {202}:
        sys.exit("not every PUT to the agent was answered 202")


if __name__ == "__main__":
    main()
