"""Waiting for room under ``max_size`` always ends (issue 16, item 6; SPEC §2.10).

Covers:
- eight 12 MiB images, eight workers, ``max_size`` 60 MiB: every download ends (cached, then
  possibly evicted, or failed) — no wake-up is missed when a commit lets its id go;
- a client that stops reading a cached image is disconnected after ``serve_idle_timeout`` and
  its pin released, so a download waiting for that room goes on and caches;
- a download waiting for room is shown as ``waiting_for_room`` with ``bytes_needed``, does not
  hold a worker (an image that fits is cached meanwhile with one worker), and fails with reason
  ``NoRoom`` after ``room_wait_timeout``; a later ``PUT`` caches it once the room is free.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from tests.agent.conftest import IMAGE_A, IMAGE_B, IMAGE_C, AgentFactory, eventually
from tests.support.upstreams import write_file_image

MiB = 2**20
EIGHT = [f"{n:08x}-0000-4000-8000-00000000000{n}" for n in range(1, 9)]


def blob(size: int, seed: int) -> bytes:
    block = bytes([seed]) * 4096 + seed.to_bytes(4, "big")
    return (block * (size // len(block) + 1))[:size]


@asynccontextmanager
async def stalled_reader(port: int, image_id: str) -> AsyncIterator[Callable[[], bool]]:
    """A client that asks for a cached image, reads its first bytes and then stops reading.

    Yields a probe: True once the agent has closed the connection.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    closed = False
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: agent\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        assert (await loop.sock_recv(sock, 1024)).startswith(b"HTTP/1.1 200")

        def agent_closed() -> bool:
            nonlocal closed
            if closed:
                return True
            try:  # drain what is buffered; end of stream or a reset means the agent closed it
                while chunk := sock.recv(1 << 20):
                    del chunk
                closed = True
            except BlockingIOError:
                pass
            except ConnectionError:
                closed = True
            return closed

        yield agent_closed
    finally:
        sock.close()


async def test_eight_images_eight_workers_none_waits_forever(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    for n, image_id in enumerate(EIGHT):
        write_file_image(upstream_dir, image_id, blob(12 * MiB, n + 1))
    agent = await make_agent(workers=8, max_size=60 * MiB, room_wait_timeout=60.0)
    for image_id in EIGHT:
        assert await agent.put(image_id) == 202

    async def settled() -> bool:
        listing = await agent.listing()
        return not listing["queued_images"]

    for _ in range(3000):  # bounded: 30 s
        if await settled():
            break
        await asyncio.sleep(0.01)
    else:
        reports = [await agent.report(i) for i in EIGHT]
        raise AssertionError(f"downloads still waiting: {reports}")
    reports = {i: await agent.report(i) for i in EIGHT}
    for report in reports.values():
        assert report["state"] in ("cached", "absent", "failed"), report
        if report["state"] == "failed":
            assert report["error"].startswith("NoRoom"), report
    cached = [i for i, r in reports.items() if r["state"] == "cached"]
    assert len(cached) == 5  # the five most recent fill the cache; the others were evicted
    assert agent.cache.records.cached_bytes <= 60 * MiB


async def test_idle_reader_is_disconnected_and_its_room_freed(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, blob(16 * MiB, 1))
    write_file_image(upstream_dir, IMAGE_B, blob(16 * MiB, 2))
    agent = await make_agent(max_size=24 * MiB, serve_idle_timeout=1.0)
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    port = agent.client.port
    assert port is not None
    async with stalled_reader(port, IMAGE_A) as agent_closed:
        await eventually(lambda: IMAGE_A in agent.cache.pinned())
        assert await agent.put(IMAGE_B) == 202
        report = await agent.wait_report(IMAGE_B, lambda r: r["waiting_for_room"])
        assert report["bytes_needed"] == 8 * MiB
        await agent.wait_for(IMAGE_B, "cached", within=20)
        assert (await agent.report(IMAGE_A))["state"] == "absent"  # evicted once unpinned
        await eventually(agent_closed)


async def test_waiting_download_frees_its_worker_and_fails_with_no_room(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, blob(16 * MiB, 1))
    write_file_image(upstream_dir, IMAGE_B, blob(16 * MiB, 2))
    write_file_image(upstream_dir, IMAGE_C, blob(1 * MiB, 3))
    agent = await make_agent(
        workers=1, max_size=24 * MiB, serve_idle_timeout=60.0, room_wait_timeout=3.0
    )
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    port = agent.client.port
    assert port is not None
    async with stalled_reader(port, IMAGE_A):
        await eventually(lambda: IMAGE_A in agent.cache.pinned())
        await agent.put(IMAGE_B)
        waiting = await agent.wait_report(IMAGE_B, lambda r: r["waiting_for_room"])
        assert waiting["state"] == "queued"
        assert waiting["bytes_needed"] == 8 * MiB
        await agent.put(IMAGE_C)  # fits: the one worker is not held by B's wait
        await agent.wait_for(IMAGE_C, "cached")
        assert (await agent.report(IMAGE_B))["waiting_for_room"]
        failed = await agent.wait_for(IMAGE_B, "failed", within=15)
        assert failed["error"].startswith("NoRoom"), failed
        assert not failed["waiting_for_room"]
        async with agent.client.get("/metrics") as response:
            assert 'imagecache_failures_total{reason="no_room"} 1.0' in await response.text()
    await eventually(lambda: IMAGE_A not in agent.cache.pinned())
    assert await agent.put(IMAGE_B) == 202  # a later PUT tries again, and now there is room
    await agent.wait_for(IMAGE_B, "cached")
