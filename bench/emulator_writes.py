"""CPU per write of the Kubernetes API emulator (tests/kube), against bare aiohttp.

The operator under test writes, per ImageCacheRequest, about 3 status merge patches and 3 Event
creates, and watches the requests; the bench process hosts the emulator (`run_emulator`, a thread
of its own), so every millisecond the emulator spends per write is taken from the 2 cores the
operator and the agents share. This measures, in one process and one run:

1. **emulator**: `run_emulator` (the project's CRD installed, namespace ``default``), one open
   watch on the ImageCacheRequests (a real HTTP client reading the JSON-lines stream), then
   `--count` creates of ImageCacheRequests, as many status merge patches (one per request, a
   status like the operator's) and as many core v1 Event creates (``generateName``, on the
   requests), `--concurrency` at a time; each phase ends when its answers are in *and* the
   watch has delivered its events (create and status patch: one event per write);
2. **bare**: the same client, the same requests, against a bare aiohttp server in its own thread
   that reads the JSON body and answers it back (201): the floor of any HTTP server here.

Per kind and phase: ops/s, CPU ms per op of the whole process (``time.process_time``: client,
server thread, watch client) and of the server thread alone. Rounds alternate (emulator, bare,
...); the medians are printed, and the ratio emulator / bare process CPU per op last.

    .venv/bin/python bench/emulator_writes.py [--count 2000] [--rounds 3] [--concurrency 16]
    .venv/bin/python bench/emulator_writes.py --rounds 1 --profile /tmp/emulator.prof

To measure another checkout's emulator (e.g. main's, before a change), put it first on the path;
the bare server and the client stay the same:

    PYTHONPATH=/work/main /work/main/.venv/bin/python bench/emulator_writes.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # the repository root, for tests.kube (after PYTHONPATH: see above)

from bench.common import median, print_report  # noqa: E402
from tests.kube import emulator as measured  # noqa: E402
from tests.kube.client import ICR, KubeClient, resource_path  # noqa: E402
from tests.kube.emulator import Emulator, run_emulator  # noqa: E402

KINDS = ("create", "status", "event")
WATCH_TIMEOUT = 120.0
"""How long a phase may wait for the watch to deliver its events (seconds)."""


def request_body(n: int) -> dict[str, Any]:
    return {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "metadata": {"name": f"req-{n}", "namespace": "default", "labels": {"bench": "yes"}},
        "spec": {"image": f"image-{n:08d}", "pod": f"agent-{n % 100}"},
    }


def status_patch(n: int) -> dict[str, Any]:
    """A status like the operator's first write (Queued, with its target and a condition)."""
    return {
        "status": {
            "phase": "Queued",
            "reason": "Queued",
            "message": f"image-{n:08d} queued on agent-{n % 100}",
            "queuePosition": n % 7,
            "attempts": 1,
            "observedGeneration": 1,
            "progress": {"bytes": 0, "totalBytes": 4194304, "percent": 0},
            "target": {
                "pod": f"agent-{n % 100}",
                "podUID": f"00000000-0000-0000-0000-{n % 100:012d}",
                "podIP": f"127.0.1.{n % 100 + 1}",
                "nodeName": "node-1",
            },
            "conditions": [
                {
                    "type": "Cached",
                    "status": "False",
                    "reason": "Queued",
                    "message": "waiting for a worker",
                    "lastTransitionTime": "2026-12-06T12:00:00Z",
                    "observedGeneration": 1,
                }
            ],
            "queuedAt": "2026-12-06T12:00:00Z",
        }
    }


def event_body(n: int, uid: str) -> dict[str, Any]:
    """A core v1 Event as the operator posts it (``generateName``, on the request)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"req-{n}.", "namespace": "default"},
        "involvedObject": {
            "apiVersion": "imagecache.dev/v1alpha1",
            "kind": "ImageCacheRequest",
            "name": f"req-{n}",
            "namespace": "default",
            "uid": uid,
        },
        "type": "Normal",
        "reason": "Queued",
        "message": f"image-{n:08d} queued on agent-{n % 100}",
        "source": {"component": "imagecache-operator"},
        "reportingComponent": "imagecache-operator",
        "firstTimestamp": "2026-12-06T12:00:00Z",
        "lastTimestamp": "2026-12-06T12:00:00Z",
        "count": 1,
    }


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds `thread` has used so far (Linux: its own CPU clock)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class Watch:
    """One watch on the ImageCacheRequests, read as a client reads it; counts events by type."""

    def __init__(self, client: KubeClient, url: str, token: str) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self.counts: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._client = client
        self.connected = asyncio.Event()

    async def start(self) -> None:
        listing = await self._client.request("GET", resource_path(ICR, "default"))
        rv = listing[1]["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._read(rv))
        await asyncio.wait_for(self.connected.wait(), 30)

    async def _read(self, rv: str) -> None:
        path = resource_path(ICR, "default")
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session,
            session.get(self._url + path, params=params) as response,
        ):
            response.raise_for_status()
            self.connected.set()
            async for line in response.content:
                event = json.loads(line)
                if event["type"] == "ERROR":
                    raise RuntimeError(f"the watch failed: {event}")
                async with self._changed:
                    self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1
                    self._changed.notify_all()

    async def wait_for(self, kind: str, count: int) -> None:
        """Until `count` events of `kind` (ADDED, MODIFIED) arrived (bounded)."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.counts.get(kind, 0) >= count)

        await asyncio.wait_for(reached(), WATCH_TIMEOUT)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run_phase(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    queue = list(range(count))
    queue.reverse()

    async def worker() -> None:
        while queue:
            await one(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


Figures = dict[str, tuple[float, float, float]]  # kind -> (wall s, process CPU s, server CPU s)


async def measure(
    client: KubeClient,
    server: threading.Thread,
    count: int,
    concurrency: int,
    watch: Watch | None,
) -> Figures:
    uids: dict[int, str] = {}

    async def create(n: int) -> None:
        created = await client.create(ICR, request_body(n), namespace="default")
        uids[n] = str(created.get("metadata", {}).get("uid", f"uid-{n}"))

    async def status(n: int) -> None:
        await client.patch(
            ICR, f"req-{n}", status_patch(n), namespace="default", subresource="status"
        )

    async def event(n: int) -> None:
        await client.create("events", event_body(n, uids[n]), namespace="default")

    steps: list[tuple[str, Callable[[int], Awaitable[None]], str | None]] = [
        ("create", create, "ADDED"),
        ("status", status, "MODIFIED"),
        ("event", event, None),
    ]
    figures: Figures = {}
    for kind, one, watched in steps:
        wall, cpu, server_cpu = time.monotonic(), time.process_time(), thread_cpu(server)
        await run_phase(count, concurrency, one)
        if watch is not None and watched is not None:
            await watch.wait_for(watched, count)
        figures[kind] = (
            time.monotonic() - wall,
            time.process_time() - cpu,
            thread_cpu(server) - server_cpu,
        )
    return figures


async def emulator_round(count: int, concurrency: int, profile: Path | None = None) -> Figures:
    async with run_emulator() as kube:
        watch = Watch(kube.client, kube.url, kube.token)
        await watch.start()
        profiler = cProfile.Profile()
        if profile is not None:
            kube.run_in_server(profiler.enable)  # profiles the emulator's thread only
        try:
            return await measure(kube.client, server_thread(kube), count, concurrency, watch)
        finally:
            if profile is not None:
                kube.run_in_server(profiler.disable)
                profiler.dump_stats(profile)
            await watch.stop()


def server_thread(kube: Emulator) -> threading.Thread:
    """The emulator's thread (found by name in a checkout whose Emulator does not say it)."""
    thread = getattr(kube, "server_thread", None)
    if isinstance(thread, threading.Thread):
        return thread
    return next(t for t in threading.enumerate() if t.name == "kube-emulator")


class BareServer(threading.Thread):
    """A bare aiohttp app on its own loop in its own thread: the body read, parsed, echoed."""

    def __init__(self) -> None:
        super().__init__(name="bare-http", daemon=True)
        self.url = ""
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()

        async def echo(request: web.Request) -> web.Response:
            return web.json_response(json.loads(await request.read()), status=201)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.ready.set()
        await self._stopping.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)


async def bare_round(count: int, concurrency: int) -> Figures:
    server = BareServer()
    server.start()
    if not await asyncio.to_thread(server.ready.wait, 30):
        raise RuntimeError("the bare server did not start within 30 s")
    try:
        client = KubeClient(server.url)
        try:
            return await measure(client, server, count, concurrency, None)
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)


async def bench(
    count: int, rounds: int, concurrency: int, profile: Path | None
) -> dict[str, dict[str, list[Figures]]]:
    runs: dict[str, list[Figures]] = {"emulator": [], "bare": []}
    for n in range(rounds):
        runs["emulator"].append(
            await emulator_round(count, concurrency, profile if n == 0 else None)
        )
        runs["bare"].append(await bare_round(count, concurrency))
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="writes of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a cProfile of the emulator's thread in the first round to this file "
        "(its figures then include the profiler's cost)",
    )
    args = parser.parse_args()
    runs = asyncio.run(bench(args.count, args.rounds, args.concurrency, args.profile))["runs"]
    figures: dict[str, str] = {}
    ratios: dict[str, float] = {}
    for kind in KINDS:
        per_op: dict[str, tuple[float, float, float]] = {}
        for side in ("emulator", "bare"):
            walls = [r[kind][0] for r in runs[side]]
            cpus = [r[kind][1] * 1000 / args.count for r in runs[side]]
            servers = [r[kind][2] * 1000 / args.count for r in runs[side]]
            per_op[side] = (args.count / median(walls), median(cpus), median(servers))
            figures[f"{kind:6} {side:8}"] = (
                f"{per_op[side][0]:7.0f} ops/s, CPU {per_op[side][1]:.3f} ms/op "
                f"(server thread {per_op[side][2]:.3f}); each round CPU ms/op "
                + ", ".join(f"{c:.3f}" for c in cpus)
            )
        ratios[kind] = per_op["emulator"][1] / per_op["bare"][1]
        figures[f"{kind:6} ratio"] = (
            f"process CPU {ratios[kind]:.2f}x, server thread "
            f"{per_op['emulator'][2] / per_op['bare'][2]:.2f}x"
        )
    total_emulator = sum(median([r[k][1] for r in runs["emulator"]]) for k in KINDS)
    total_bare = sum(median([r[k][1] for r in runs["bare"]]) for k in KINDS)
    print_report(
        "Kubernetes API emulator: CPU per write vs bare aiohttp (same client, same requests)",
        {
            "count": f"{args.count} of each kind per round",
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "watch": "one on imagecacherequests (emulator only)",
            "emulator": str(Path(measured.__file__).resolve().parent),
        },
        figures,
        (
            "emulator / bare process CPU, all three kinds (median)",
            total_emulator / total_bare,
            "1.0 would be a bare HTTP server",
        ),
    )


if __name__ == "__main__":
    main()
