"""SPEC §7, last row: the operator at scale -- 1,000 requests over 50 agents on loopback.

Two phases, side by side in one run, over the same agents and images:

1. **agents alone**: every agent is sent ``PUT /v2/cache/<id>`` for its images directly and
   polled until all are cached -- the agents' own caching time;
2. **through the operator**: caches cleared, the Kubernetes API emulator (tests/kube) gets one
   pod per agent and one ImageCacheRequest per (agent, image); the ``imagecache-operator``
   process takes them to ``Cached`` -- the total time, from the first create to the last one.

Also counted: the operator's ``GET /v2/cache`` requests to agents, which must stay within
``agents x polls`` (polls = total time / poll interval, plus one). Prints the inputs, every
figure, and the ratio (operator time / agents' time; target <= 1.5) last.

    .venv/bin/python bench/operator_scale.py [--requests 1000] [--agents 50] [--image-kib 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # the repository root, for tests.kube and tests.operator

from tests.kube.emulator import run_emulator  # noqa: E402
from tests.operator.harness import ICR, AgentPool, request_body  # noqa: E402
from tests.support.agents import AgentProcess, free_port  # noqa: E402

TOKEN = "bench-token"
HEADERS = {"X-Auth-Token": TOKEN}


def generate_images(directory: Path, count: int, size: int) -> list[str]:
    """`count` distinct images of `size` bytes with Glance sidecars; their ids."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(count):
        image = f"00000000-0000-4000-9000-{n:012d}"
        block = hashlib.sha512(image.encode()).digest() * 1024  # 64 KiB
        data = (block * (size // len(block) + 1))[:size]
        (directory / image).write_bytes(data)
        sidecar = {
            "status": "active",
            "checksum": hashlib.md5(data).hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(data).hexdigest(),
        }
        (directory / f"{image}.json").write_text(json.dumps(sidecar))
        ids.append(image)
    return ids


def assignments(agents: int, requests: int, images: list[str]) -> list[tuple[int, str]]:
    """(agent index, image) per request: round-robin over agents, distinct images per agent."""
    return [(n % agents, images[n // agents]) for n in range(requests)]


async def start_agents(pool: AgentPool, count: int) -> list[AgentProcess]:
    """Start `count` agents (127.0.0.2 ...) a few at a time."""
    agents: list[AgentProcess] = []
    for first in range(0, count, 8):
        batch = range(first, min(count, first + 8))
        agents += await asyncio.gather(*(asyncio.to_thread(pool.start, 2 + n) for n in batch))
    return agents


async def agents_alone(
    session: aiohttp.ClientSession, agents: list[AgentProcess], plan: list[tuple[int, str]]
) -> float:
    """PUT every image to its agent directly; seconds until every agent lists all as cached."""
    wanted: dict[int, set[str]] = {}
    for index, image in plan:
        wanted.setdefault(index, set()).add(image)
    started = time.monotonic()
    await asyncio.gather(*(_put(session, agents[index].url, image) for index, image in plan))
    pending = dict(wanted)
    while pending:
        for index in list(pending):
            async with session.get(f"{agents[index].url}/v2/cache", headers=HEADERS) as response:
                listing = await response.json()
            if pending[index] <= {e["image_id"] for e in listing["cached_images"]}:
                del pending[index]
        if pending:
            await asyncio.sleep(0.05)
        if time.monotonic() - started > 1800:
            raise TimeoutError("agents did not cache everything in 30 minutes")
    return time.monotonic() - started


async def _put(session: aiohttp.ClientSession, url: str, image: str) -> None:
    async with session.put(f"{url}/v2/cache/{image}", headers=HEADERS) as response:
        assert response.status == 202, response.status


async def clear(session: aiohttp.ClientSession, agents: list[AgentProcess]) -> None:
    for agent in agents:
        async with session.delete(f"{agent.url}/v2/cache", headers=HEADERS) as response:
            assert response.status == 204, response.status


def _metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def through_operator(
    root: Path, agents: list[AgentProcess], plan: list[tuple[int, str]], poll: float
) -> tuple[float, float, dict[str, Any]]:
    """(seconds to all Cached, agent GETs by the operator, extra figures).

    The operator runs as its own process (``imagecache-operator`` with KUBECONFIG), as in a
    cluster: sharing the emulator's process would make both compete for one GIL.
    """
    async with run_emulator(workdir=root / "kube") as kube:
        for n, agent in enumerate(agents):
            await kube.client.create_pod(
                "default",
                f"agent-{n}",
                ip=agent.host,
                annotations={"imagecache.dev/port": str(agent.port)},
            )
        metrics_port = free_port()
        env = {
            **os.environ,
            **kube.env,
            "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": str(root / "token"),
            "IMAGECACHE_OPERATOR_POLL_INTERVAL": str(poll),
            "IMAGECACHE_OPERATOR_RECHECK_INTERVAL": "600",
            "IMAGECACHE_OPERATOR_RETRY_BACKOFF": "0.5",
            "IMAGECACHE_OPERATOR_RETRY_BACKOFF_CAP": "5",
            "IMAGECACHE_OPERATOR_METRICS_HOST": "127.0.0.1",
            "IMAGECACHE_OPERATOR_METRICS_PORT": str(metrics_port),
            "IMAGECACHE_OPERATOR_LOG_LEVEL": "WARNING",
        }
        script = Path(sys.executable).with_name("imagecache-operator")
        command = [str(script)]
        if os.environ.get("BENCH_PROFILE"):  # write a cProfile of the operator to this file
            command = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                os.environ["BENCH_PROFILE"],
                str(script),
            ]
        log = (root / "operator.log").open("wb")
        process = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block)
            command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        try:
            async with aiohttp.ClientSession() as session:
                await _wait_healthy(session, metrics_url, process)
                started = time.monotonic()
                queue = [
                    request_body(f"req-{n}", image, pod=f"agent-{index}")
                    for n, (index, image) in enumerate(plan)
                ]

                async def creator() -> None:
                    while queue:
                        await kube.client.create(ICR, queue.pop())

                await asyncio.gather(*(creator() for _ in range(16)))
                created = time.monotonic() - started
                cached = 0
                while cached < len(plan):
                    items = await kube.client.list(ICR, namespace="default")
                    cached = sum(
                        1 for i in items if (i.get("status") or {}).get("phase") == "Cached"
                    )
                    if cached < len(plan):
                        await asyncio.sleep(0.5)  # listing 1,000 objects is work for the emulator
                    if time.monotonic() - started > 1800:
                        raise TimeoutError(f"only {cached}/{len(plan)} Cached after 30 minutes")
                total = time.monotonic() - started
                async with session.get(f"{metrics_url}/metrics") as response:
                    text = await response.text()
                operator_cpu = _cpu_seconds(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
        gets = _metric_sum(text, "imagecache_operator_agent_requests_total", method="GET")
        puts = _metric_sum(text, "imagecache_operator_agent_requests_total", method="PUT")
        patches = sum(
            1 for r in kube.requests if r.method == "PATCH" and "imagecacherequests" in str(r.url)
        )
    extra = {
        "create_seconds": created,
        "agent_puts": puts,
        "status_patches": patches,
        "operator_cpu": operator_cpu,
        "emulator_cpu": _cpu_seconds(os.getpid()),
    }
    return total, gets, extra


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_healthy(
    session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}")
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the operator did not become healthy in 60 s")


async def bench(requests: int, agent_count: int, image_size: int, poll: float) -> None:
    per_agent = math.ceil(requests / agent_count)
    print(
        f"inputs: requests={requests} agents={agent_count} images_per_agent={per_agent} "
        f"image_size={image_size} B poll_interval={poll}s"
    )
    with tempfile.TemporaryDirectory(prefix="imagecache-bench-") as tmp:
        root = Path(tmp)
        images = generate_images(root / "images", per_agent, image_size)
        (root / "token").write_text(TOKEN + "\n")
        pool = AgentPool(
            root=root / "agents", upstream=f"file://{root / 'images'}", token_file=root / "token"
        )
        try:
            agents = await start_agents(pool, agent_count)
            plan = assignments(agent_count, requests, images)
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as session:
                alone = await agents_alone(session, agents, plan)
                await clear(session, agents)
            total, gets, extra = await through_operator(root, agents, plan, poll)
        finally:
            pool.stop_all()
    polls = total / poll + 1
    bound = agent_count * polls
    print(f"agents alone: all {requests} cached in {alone:.2f} s")
    print(
        f"through the operator: all {requests} Cached in {total:.2f} s "
        f"(objects created in {extra['create_seconds']:.2f} s)"
    )
    print(
        f"operator requests to agents: PUT {extra['agent_puts']:.0f}, GET /v2/cache {gets:.0f} "
        f"(bound agents x polls = {agent_count} x {polls:.1f} = {bound:.0f}: "
        f"{'ok' if gets <= bound else 'EXCEEDED'})"
    )
    print(f"status patches (API writes to imagecacherequests): {extra['status_patches']}")
    print(
        f"CPU: operator process {extra['operator_cpu']:.1f} s, bench + emulator process "
        f"{extra['emulator_cpu']:.1f} s (2 cores shared with the {agent_count} agents)"
    )
    print(f"ratio operator/agents: {total / alone:.2f} (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description="operator at scale (SPEC §7)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--image-kib", type=int, default=4096, help="size of each image")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(bench(args.requests, args.agents, args.image_kib * 1024, args.poll_interval))


if __name__ == "__main__":
    main()
