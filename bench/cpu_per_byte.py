#!/usr/bin/env python3
"""Issue 16 item 8 / SPEC §7 last row: CPU per GiB the agent spends caching an image, side by
side with baselines measured in the same run.

Contenders, alternated for `--runs` rounds on the same bytes (a `--size` file with md5 and
sha512 known, so every contender verifies both digests, as Glance images carry both):

- **agent, HTTP**: a real agent process caching from a Glance-like HTTP upstream (an aiohttp
  app in this process, in its own thread: `GET /v2/images/{id}` with size, checksum and
  os_hash, `GET /v2/images/{id}/file` sent with sendfile), `PUT` → `cached`;
- **agent, HTTP, sha512 only**: the same with an upstream that gives no md5 ``checksum`` (what
  one digest costs: the agent computes only the digests it verifies);
- **agent, file**: another agent process caching the same file from a `file://` upstream;
- **agent before** (with `--before SRC`, e.g. `/work/main/operator`): the same HTTP run with the
  agent package imported from SRC, the code before this change;
- **reference**: `../shared/bench/reference_copy.py SRC DST` (read, md5 + sha512 in threads,
  write, fsync, rename);
- **curl | tee | sha512sum + sync** (when curl exists): the same HTTP bytes to a file with one
  digest, then `sync`;
- with `--glance`: **Glance 33** (bench/glance33.py: the real glance-api of the OpenStack venv,
  image cache on) caching the same image on a read-through `GET`, plus `sync`, and for a like
  for like comparison **agent read-through**: a `GET /v2/images/{id}/file` miss on the HTTP
  agent (``cache_on_read``: the client and the cache share one upstream stream), read to the
  end, until `cached`.

CPU of an agent = user + system time of its process (all threads) from /proc/<pid>/stat, read
just before the `PUT` and just after `cached` is seen (the bench polls `GET /v2/cache/{id}`
every 50 ms: that polling is in the figure); CPU of a command = `RUSAGE_CHILDREN` delta
(interpreter start-up included). Wall = from the `PUT` (or the command's start) to done; the
reference's own printed seconds are used for it. In a further round per run, `/healthz` is
asked every 5 ms while the agent downloads from HTTP: p50/p99/max latency.

The machine is shared: absolute figures move with other people's load; compare the ratios,
which are measured side by side, alternating, in the same run. The page cache is not dropped
(the source is read once first, so every contender reads it warm).

Usage: python bench/cpu_per_byte.py [--size 512M] [--runs 3] [--before /work/main/operator]
       [--glance]
Targets: agent HTTP ≤ 3.5 CPU s/GiB; 512 MiB agent HTTP wall ≤ 0.9 × reference (ratio last).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common import (
    REPO,
    AgentProcess,
    agent_call,
    link_image,
    make_image_file,
    median,
    parse_size,
    print_report,
    wait_cached,
    warm,
)

from tests.support.agents import free_port

REFERENCE = Path("/work/shared/bench/reference_copy.py")
TICKS = os.sysconf("SC_CLK_TCK")
GiB = 2**30


def process_cpu(pid: int) -> float:
    """User + system seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def glance_like(source: Path, meta: dict[str, Any]) -> Iterator[str]:
    """A Glance-like upstream serving `source` for every id, in a thread; yields its URL."""
    import asyncio

    from aiohttp import web

    async def show(request: web.Request) -> web.Response:
        return web.json_response({**meta, "id": request.match_info["image_id"]})

    async def data(request: web.Request) -> web.FileResponse:
        return web.FileResponse(source, headers={"Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/v2/images/{image_id}", show)
    app.router.add_get("/v2/images/{image_id}/file", data)
    app.router.add_get("/plain/{image_id}", data)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    thread = threading.Thread(target=loop.run_forever, name="upstream", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def cache_once(agent: AgentProcess, image_id: str) -> tuple[float, float]:
    """(wall seconds, agent CPU seconds) from PUT to cached; the image is deleted afterwards."""
    assert agent.process is not None
    pid = agent.process.pid
    cpu = process_cpu(pid)
    started = time.perf_counter()
    agent_call(agent, "PUT", f"/v2/cache/{image_id}")
    wait_cached(agent, image_id, timeout=900, interval=0.05)
    wall = time.perf_counter() - started
    used = process_cpu(pid) - cpu
    agent_call(agent, "DELETE", f"/v2/cache/{image_id}")
    return wall, used


def read_through_once(agent: AgentProcess, image_id: str) -> tuple[float, float]:
    """(wall, agent CPU) of a `GET` miss read to the end, until the image is cached."""
    assert agent.process is not None
    pid = agent.process.pid
    cpu = process_cpu(pid)
    started = time.perf_counter()
    with urllib.request.urlopen(f"{agent.url}/v2/images/{image_id}/file", timeout=900) as body:
        while body.read(4 * 2**20):
            pass
    wait_cached(agent, image_id, timeout=900, interval=0.05)
    wall = time.perf_counter() - started
    used = process_cpu(pid) - cpu
    agent_call(agent, "DELETE", f"/v2/cache/{image_id}")
    return wall, used


def healthz_during(agent: AgentProcess, image_id: str) -> list[float]:
    """Latencies (s) of `/healthz` asked every 5 ms while the agent caches `image_id`."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(f"{agent.url}/healthz", timeout=10) as response:
                response.read()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        cache_once(agent, image_id)
    finally:
        done.set()
        poller.join(15)
    return latencies


def run_command(command: list[str], *, shell: bool = False) -> tuple[float, float, str]:
    """(wall, children CPU, stdout) of one command."""
    cpu = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        command if not shell else ["bash", "-o", "pipefail", "-c", command[0]],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return time.perf_counter() - started, children_cpu() - cpu, done.stdout


def hash_floor(source: Path) -> float:
    """CPU seconds of hashlib md5 + sha512 alone over the file (read from the page cache)."""
    md5, sha512 = hashlib.md5(), hashlib.sha512()
    started = time.process_time()
    with source.open("rb", buffering=0) as handle:
        while chunk := handle.read(4 * 2**20):
            md5.update(chunk)
            sha512.update(chunk)
    return time.process_time() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="512M", help="image size (default 512M)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of each contender")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--before", type=Path, default=None, help="source root of the agent before the change"
    )
    parser.add_argument(
        "--glance", action="store_true", help="also Glance 33 (and the agent) read-through"
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    gib = size / GiB
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagecache-cpu-"))
    source_dir = workdir / "source"
    source = make_image_file(source_dir, "base", size)
    sidecar = json.loads((source_dir / "base.json").read_text())
    meta = {"status": "active", "size": size, **sidecar}
    curl = shutil.which("curl")
    results: dict[str, list[tuple[float, float]]] = {}
    healthz: list[float] = []
    floor: list[float] = []
    warm(source)

    def record(name: str, wall: float, cpu: float) -> None:
        results.setdefault(name, []).append((wall, cpu))

    single = {key: value for key, value in meta.items() if key != "checksum"}
    with ExitStack() as stack:
        url = stack.enter_context(glance_like(source, meta))
        single_url = stack.enter_context(glance_like(source, single))
        glance = None
        if args.glance:
            from glance33 import glance_33

            glance = stack.enter_context(glance_33(workdir / "glance", source))
        agents: dict[str, AgentProcess] = {}
        env_before: dict[str, str] | None = None
        contenders = {
            "agent HTTP": f"glance+{url}",
            "agent HTTP sha512 only": f"glance+{single_url}",
            "agent file": f"file://{source_dir}",
        }
        if args.before is not None:
            contenders["agent HTTP, before"] = f"glance+{url}"
            env_before = {**os.environ, "PYTHONPATH": str(args.before)}
        for name, upstream in contenders.items():
            cache_dir = workdir / name.replace(" ", "-").replace(",", "")
            shutil.rmtree(cache_dir, ignore_errors=True)
            agents[name] = AgentProcess(
                cache_dir=cache_dir, upstream=upstream, extra_args=["--log-level", "WARNING"]
            )
        try:
            for name, agent in agents.items():
                if name.endswith("before") and env_before is not None:
                    with patched_environ(env_before):
                        agent.start()
                else:
                    agent.start()
            for run in range(args.runs):
                for name, agent in agents.items():
                    if name == "agent file":
                        image_id = f"bench-{uuid.uuid4()}"
                        link_image(source_dir, source, image_id)
                    else:
                        image_id = str(uuid.uuid4())
                    record(name, *cache_once(agent, image_id))
                    if name == "agent file":
                        for suffix in ("", ".json"):
                            (source_dir / f"{image_id}{suffix}").unlink()
                destination = workdir / "reference.out"
                wall, cpu, out = run_command(
                    [sys.executable, str(REFERENCE), str(source), str(destination)]
                )
                destination.unlink()
                record("reference_copy.py", float(out.split()[0]), cpu)
                if curl:
                    target = workdir / "curl.out"
                    pipeline = f"{curl} -sf {url}/plain/x | tee {target} | sha512sum; sync"
                    wall, cpu, out = run_command([pipeline], shell=True)
                    if out.split()[0] != sidecar["os_hash_value"]:
                        raise RuntimeError("curl pipeline digest differs")
                    target.unlink()
                    record("curl | tee | sha512sum + sync", wall, cpu)
                if glance is not None:
                    record("Glance 33 read-through GET + sync", *glance.cache_once())
                    record(
                        "agent read-through GET",
                        *read_through_once(agents["agent HTTP"], str(uuid.uuid4())),
                    )
                healthz += healthz_during(agents["agent HTTP"], str(uuid.uuid4()))
                floor.append(hash_floor(source))
                line = ", ".join(
                    f"{n} {r[-1][0]:.2f} s / {r[-1][1]:.2f} CPU s" for n, r in results.items()
                )
                print(f"run {run + 1}: {line}", flush=True)
        finally:
            for agent in agents.values():
                if agent.process is not None:
                    agent.stop()
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    figures: dict[str, Any] = {}
    medians: dict[str, tuple[float, float]] = {}
    for name, values in results.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        medians[name] = (median(walls), median(cpus))
        figures[f"{name}: wall s (each)"] = fmt(walls)
        figures[f"{name}: CPU s (each)"] = fmt(cpus)
        figures[f"{name}: median CPU s per GiB"] = f"{median(cpus) / gib:.2f}"
    http_wall, http_cpu = medians["agent HTTP"]
    ref_wall, ref_cpu = medians["reference_copy.py"]
    figures["agent HTTP CPU / reference CPU"] = f"{http_cpu / ref_cpu:.3f}"
    figures["agent file CPU / reference CPU"] = f"{medians['agent file'][1] / ref_cpu:.3f}"
    figures["agent file wall / reference wall"] = f"{medians['agent file'][0] / ref_wall:.3f}"
    if "curl | tee | sha512sum + sync" in medians:
        curl_wall, curl_cpu = medians["curl | tee | sha512sum + sync"]
        figures["agent HTTP CPU / curl pipeline CPU"] = f"{http_cpu / curl_cpu:.3f}"
        figures["agent HTTP wall / curl pipeline wall"] = f"{http_wall / curl_wall:.3f}"
    if "Glance 33 read-through GET + sync" in medians:
        glance_wall, glance_cpu = medians["Glance 33 read-through GET + sync"]
        tee_wall, tee_cpu = medians["agent read-through GET"]
        figures["agent HTTP CPU / Glance 33 CPU"] = f"{http_cpu / glance_cpu:.3f}"
        figures["agent HTTP wall / Glance 33 wall (target ≤ 1.0)"] = (
            f"{http_wall / glance_wall:.3f}"
        )
        figures["agent read-through CPU / Glance 33 CPU"] = f"{tee_cpu / glance_cpu:.3f}"
        figures["agent read-through wall / Glance 33 wall"] = f"{tee_wall / glance_wall:.3f}"
    if "agent HTTP, before" in medians:
        before_wall, before_cpu = medians["agent HTTP, before"]
        figures["agent HTTP CPU / before CPU"] = f"{http_cpu / before_cpu:.3f}"
        figures["agent HTTP wall / before wall"] = f"{http_wall / before_wall:.3f}"
    figures["hashlib md5 + sha512 alone, CPU s per GiB (each)"] = fmt([f / gib for f in floor])
    figures["agent HTTP CPU above md5 + sha512, s per GiB"] = (
        f"{(http_cpu - median(floor)) / gib:.2f}"
    )
    figures["agent HTTP CPU s per GiB (target ≤ 3.5)"] = f"{http_cpu / gib:.2f}"
    figures["/healthz during an HTTP download, ms (n, p50, p99, max; target p99 < 20)"] = (
        f"{len(healthz)}, {percentile(healthz, 0.5) * 1e3:.1f}, "
        f"{percentile(healthz, 0.99) * 1e3:.1f}, {max(healthz) * 1e3:.1f}"
    )
    print_report(
        "CPU per byte: agent vs reference_copy.py and curl, same run",
        {
            "size": f"{size} bytes ({size / 2**20:.0f} MiB)",
            "runs": args.runs,
            "digests verified": "md5 + sha512 (all contenders but curl: sha512 only)",
            "agent before": str(args.before) if args.before else "not run",
            "Glance 33": "run" if args.glance else "not run (--glance)",
            "repo": str(REPO),
        },
        figures,
        ("agent HTTP wall / reference wall (median)", http_wall / ref_wall, "≤ 0.9"),
    )


@contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
