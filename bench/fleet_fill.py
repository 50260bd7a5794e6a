"""SPEC §7 fleet-fill row, issue 15: one image on N agents, every pod from the upstream vs fan-out.

For each N (default 8, 16, 32): N real ``imagecache-agent`` processes on 127.0.0.2, .3, ...
(``--peer-networks 127.0.0.0/8``), one pod each in the Kubernetes API emulator (tests/kube),
the real ``imagecache-operator`` process, and an HTTP upstream throttled to ``--upstream-mibps``
for all its connections together (a shared backend: a Swift/Ceph cluster or a remote site),
serving one ``--size`` image (default 64 MiB) with its md5 (``Content-MD5``) so peers can be
verified. Two modes, side by side in one run over the same agents:

1. **upstream**: a selector request over all N with ``fanout: {enabled: false}``;
2. **fan-out**: the same with the defaults (``seeds: 1, width: 4``).

Each mode: from the create to ``Cached`` on all N (wall seconds), the bytes the upstream sent
(counted by the upstream itself) and, from the agents' metrics, bytes from the upstream vs from
peers and peer fallbacks. Between modes the request is deleted and every cache cleared.
Prints the inputs, every figure, and the ratios last (targets: upstream bytes <= 1.2 x image x
seeds; fan-out wall <= 0.3 x upstream wall at N = 32); ``--png`` draws both against N.

    .venv/bin/python bench/fleet_fill.py [--pods 8,16,32] [--size 64M] [--upstream-mibps 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from common import REPO, AgentProcess, free_port, machine, parse_size  # isort: skip

from tests.kube.emulator import run_emulator
from tests.operator.harness import ICR, create_agent_pod, request_body

TOKEN = "bench-fleet-token"
OPERATOR_TOKEN = "bench-fleet-operator"
IMAGE = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
HEADERS = {"X-Auth-Token": TOKEN}
LABELS = {"app": "glance-api"}
MiB = 2**20


# --- the throttled upstream (its own process) ----------------------------------------------
class Bucket:
    """One bandwidth for every connection: each chunk waits for its turn on a shared clock."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.free_at = 0.0

    async def take(self, size: int) -> None:
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        if self.free_at > now:
            await asyncio.sleep(self.free_at - now)  # the throttle itself: bytes per second


async def serve_upstream(data: bytes, port: int, rate: float) -> None:
    """``GET/HEAD /<id>`` of one image at `rate` bytes/s in total; ``GET /stats`` counts."""
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    bucket = Bucket(rate)
    stats = {"bytes": 0, "gets": 0}

    async def image(request: web.Request) -> web.StreamResponse:
        if request.match_info["image_id"] != IMAGE:
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={"Content-MD5": md5, "Accept-Ranges": "bytes"})
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        stats["gets"] += 1
        view = memoryview(data)
        for offset in range(0, len(data), 256 * 1024):
            piece = view[offset : offset + 256 * 1024]
            await bucket.take(len(piece))
            await response.write(piece)
            stats["bytes"] += len(piece)
        await response.write_eof()
        return response

    async def show(_: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/stats", show)
    app.router.add_get("/{image_id}", image)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- one N -----------------------------------------------------------------------------------
async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=HEADERS) as response:
        return await response.json()


async def _agent_bytes(session: aiohttp.ClientSession, agents: list[Any]) -> dict[str, float]:
    totals = {"upstream": 0.0, "peers": 0.0, "fallbacks": 0.0}
    names = {
        "imagecache_downloaded_bytes_total": "upstream",
        "imagecache_peer_downloaded_bytes_total": "peers",
        "imagecache_peer_fallbacks_total": "fallbacks",
    }
    for agent in agents:
        async with session.get(f"{agent.url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in names:
                totals[names[name]] += float(line.rsplit(" ", 1)[1])
    return totals


async def one_mode(
    kube: Any, session: aiohttp.ClientSession, agents: list[Any], upstream: str, fanout: bool
) -> dict[str, float]:
    before = await _json(session, f"{upstream}/stats")
    agent_before = await _agent_bytes(session, agents)
    name = "fanout" if fanout else "upstream"
    spec: dict[str, Any] = {} if fanout else {"fanout": {"enabled": False}}
    started = time.monotonic()
    await kube.client.create(
        ICR, request_body(name, IMAGE, selector={"matchLabels": LABELS}, **spec)
    )
    while True:
        obj = await kube.client.get(ICR, name, namespace="default")
        status = (obj or {}).get("status") or {}
        summary = status.get("summary") or {}
        if status.get("phase") == "Cached" and summary.get("total") == len(agents):
            break
        if status.get("phase") == "Failed":
            raise RuntimeError(f"{name}: Failed: {status.get('message')}")
        if time.monotonic() - started > 1800:
            raise TimeoutError(f"{name}: not Cached after 30 minutes: {summary}")
        await asyncio.sleep(0.1)
    wall = time.monotonic() - started
    after = await _json(session, f"{upstream}/stats")
    agent_after = await _agent_bytes(session, agents)
    sources = {t.get("source") for t in status.get("targets") or []}
    await kube.client.delete(ICR, name, namespace="default")
    for agent in agents:
        async with session.delete(f"{agent.url}/v2/cache", headers=HEADERS) as response:
            assert response.status == 204, response.status
    return {
        "wall": wall,
        "upstream_bytes": after["bytes"] - before["bytes"],
        "upstream_gets": after["gets"] - before["gets"],
        "agent_upstream_bytes": agent_after["upstream"] - agent_before["upstream"],
        "agent_peer_bytes": agent_after["peers"] - agent_before["peers"],
        "fallbacks": agent_after["fallbacks"] - agent_before["fallbacks"],
        "peer_sources": len(sources - {"upstream", None}),
    }


async def for_pods(
    root: Path, pods: int, upstream: str, poll: float
) -> dict[str, dict[str, float]]:
    agents: list[AgentProcess] = []
    try:
        for n in range(pods):  # one at a time, generous bound: the machine is shared
            agent = AgentProcess(
                cache_dir=root / f"agents-{pods}" / f"agent-{n}" / "cache",
                upstream=f"{upstream}/",
                host=f"127.0.0.{2 + n}",
                token_file=root / "token",
                extra_args=["--peer-networks", "127.0.0.0/8"],
            )
            agent.cache_dir.parent.mkdir(parents=True, exist_ok=True)
            agents.append(agent)
            await asyncio.to_thread(agent.start, 120.0)
        async with run_emulator(workdir=root / f"kube-{pods}") as kube:
            for n, agent in enumerate(agents):
                await create_agent_pod(kube, f"glance-{n}", agent, labels=LABELS)
            env = {
                **os.environ,
                "KUBECONFIG": str(kube.kubeconfig_for(OPERATOR_TOKEN)),
                "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": str(root / "token"),
                "IMAGECACHE_OPERATOR_POLL_INTERVAL": str(poll),
                "IMAGECACHE_OPERATOR_METRICS_HOST": "127.0.0.1",
                "IMAGECACHE_OPERATOR_METRICS_PORT": str(free_port()),
                "IMAGECACHE_OPERATOR_LOG_LEVEL": "WARNING",
            }
            script = Path(sys.executable).with_name("imagecache-operator")
            log = (root / f"operator-{pods}.log").open("wb")
            process = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block)
                [str(script)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                async with aiohttp.ClientSession() as session:
                    results = {
                        "upstream": await one_mode(kube, session, agents, upstream, False),
                        "fanout": await one_mode(kube, session, agents, upstream, True),
                    }
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                log.close()
    finally:
        for agent in agents:
            agent.kill()
    return results


def draw(png: Path, size: int, results: dict[int, dict[str, dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pods = sorted(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, label in (("upstream", "every pod from the upstream"), ("fanout", "fan-out")):
        left.plot(pods, [results[n][mode]["upstream_bytes"] / MiB for n in pods], "o-", label=label)
        right.plot(pods, [results[n][mode]["wall"] for n in pods], "o-", label=label)
    left.axhline(1.2 * size / MiB, color="grey", linestyle=":", label="target 1.2 x image")
    left.set(xlabel="pods (N)", ylabel="MiB read from the upstream", title="upstream bytes")
    right.set(xlabel="pods (N)", ylabel="seconds to Cached on all N", title="wall time")
    for axis in (left, right):
        axis.set_xticks(pods)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(f"Fleet fill: one {size // MiB} MiB image on N agents (issue 15)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


async def bench(pods: list[int], size: int, mibps: float, poll: float, png: Path | None) -> None:
    print(
        f"inputs: pods={pods} image={size} B upstream={mibps} MiB/s shared poll_interval={poll}s "
        f"fanout defaults seeds=1 width=4; {machine()}"
    )
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="imagecache-fleet-") as tmp:
        root = Path(tmp)
        (root / "token").write_text(TOKEN + "\n")
        image = root / "image"
        image.write_bytes(random.Random(15).randbytes(size))
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block)
            [sys.executable, __file__, "--serve-upstream", str(image), str(port), str(mibps)]
        )
        upstream = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    try:
                        await _json(session, f"{upstream}/stats")
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            for n in pods:
                results[n] = await for_pods(root, n, upstream, poll)
                for mode, figures in results[n].items():
                    print(
                        f"N={n} {mode:8s} "
                        + json.dumps({k: round(v, 2) for k, v in figures.items()})
                    )
        finally:
            server.terminate()
            server.wait(timeout=10)
    if png is not None:
        draw(png, size, results)
        print(f"picture: {png}")
    for n in pods:
        up, fan = results[n]["upstream"], results[n]["fanout"]
        print(
            f"N={n}: upstream bytes fan-out / image = {fan['upstream_bytes'] / size:.2f} "
            f"(target <= 1.2; every-pod mode {up['upstream_bytes'] / size:.2f}); "
            f"wall fan-out / every-pod = {fan['wall']:.1f} / {up['wall']:.1f} s = "
            f"{fan['wall'] / up['wall']:.2f} (target <= 0.3 at N = 32)"
        )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-upstream":
        data = Path(sys.argv[2]).read_bytes()
        asyncio.run(serve_upstream(data, int(sys.argv[3]), float(sys.argv[4]) * MiB))
        return
    parser = argparse.ArgumentParser(description="fleet fill (SPEC §7, issue 15)")
    parser.add_argument("--pods", default="8,16,32", help="comma-separated N values")
    parser.add_argument("--size", default="64M", help="image size")
    parser.add_argument(
        "--upstream-mibps", type=float, default=32.0, help="shared upstream bandwidth"
    )
    parser.add_argument("--poll-interval", type=float, default=0.5, help="operator poll interval")
    parser.add_argument("--png", type=Path, default=REPO / "bench" / "fleet_fill.png")
    args = parser.parse_args()
    pods = [int(p) for p in args.pods.split(",") if p.strip()]
    asyncio.run(
        bench(pods, parse_size(args.size), args.upstream_mibps, args.poll_interval, args.png)
    )


if __name__ == "__main__":
    main()
