#!/usr/bin/env python3
"""SPEC §7 row 3: idle worker, `PUT` → download started, p99.

An HTTP upstream in this process (its own thread and event loop) timestamps, with the same
monotonic clock as the client, the first byte request (`GET /<id>`) for every image. The client
sends `PUT /v2/cache/<id>` for one small image at a time and waits until that image is cached
(so a worker is idle before every PUT). "Started" is seen from the upstream side: the figure is
upstream-GET-arrival minus PUT-sent. The PUT-answered → GET figure is printed too (negative
means the download started before the 202 reached the client).

Usage: python bench/put_latency.py [--count 300] [--size 4K]
Target: p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import shutil
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web
from common import AgentProcess, parse_size, print_report, wait_cached


class TimestampingUpstream:
    """`GET/HEAD /<id>`: answers any id with `size` bytes; records the first GET's time."""

    def __init__(self, size: int) -> None:
        self.data = b"x" * size
        self.first_get: dict[str, float] = {}
        self.seen = threading.Condition()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            now = time.monotonic()
            with self.seen:
                self.first_get.setdefault(request.match_info["id"], now)
                self.seen.notify_all()
        return web.Response(body=self.data, content_type="application/octet-stream")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{id}", self._handle)  # also answers HEAD
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def __enter__(self) -> TimestampingUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_get(self, image_id: str, timeout: float) -> float:
        with self.seen:
            if not self.seen.wait_for(lambda: image_id in self.first_get, timeout):
                raise TimeoutError(f"the upstream never saw GET /{image_id}")
            return self.first_get[image_id]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def spread(values: list[float]) -> str:
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300, help="PUTs measured (default 300)")
    parser.add_argument("--size", default="4K", help="size of each image (default 4K)")
    parser.add_argument("--warmup", type=int, default=10, help="PUTs not measured (default 10)")
    args = parser.parse_args()
    size = parse_size(args.size)
    workdir = Path(tempfile.mkdtemp(prefix="imagecache-bench-"))
    to_start: list[float] = []
    answered_to_start: list[float] = []
    put_rtt: list[float] = []
    with TimestampingUpstream(size) as upstream:
        agent = AgentProcess(
            cache_dir=workdir / "cache",
            upstream=f"http://127.0.0.1:{upstream.port}/",
            extra_args=["--log-level", "WARNING"],
        )
        agent.start()
        connection = http.client.HTTPConnection(agent.host, agent.port, timeout=10)
        try:
            for n in range(args.warmup + args.count):
                image_id = f"lat-{n}"
                sent = time.monotonic()
                connection.request("PUT", f"/v2/cache/{image_id}", headers={"Content-Length": "0"})
                response = connection.getresponse()
                response.read()
                answered = time.monotonic()
                assert response.status == 202, response.status
                started = upstream.wait_get(image_id, timeout=10)
                wait_cached(agent, image_id, timeout=10, interval=0.001)
                if n >= args.warmup:
                    to_start.append((started - sent) * 1000)
                    answered_to_start.append((started - answered) * 1000)
                    put_rtt.append((answered - sent) * 1000)
        finally:
            connection.close()
            agent.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    p50, p99 = percentile(to_start, 0.50), percentile(to_start, 0.99)
    print_report(
        "idle worker: PUT sent → upstream GET (download started)",
        {"PUTs measured": args.count, "warm-up PUTs": args.warmup, "image size": f"{size} bytes"},
        {
            "PUT→started p50": f"{p50:.2f} ms",
            "PUT→started p99": f"{p99:.2f} ms",
            "PUT→started max": f"{max(to_start):.2f} ms",
            "PUT round trip p50 / p99": spread(put_rtt),
            "202 received→started p50 / p99": spread(answered_to_start),
        },
        ("p99 PUT→started / 10 ms", p99 / 10, "< 1.0"),
    )


if __name__ == "__main__":
    main()
