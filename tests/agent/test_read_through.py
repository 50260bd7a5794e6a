"""Read-through with ``cache_on_read`` downloads the image once (issue 16, item 8; tee.py).

Covers: a `GET` miss makes exactly one upstream `GET` of the bytes (HTTP and Glance upstreams)
while the client gets every byte and the image ends cached, verified; a client that
disconnects mid-way leaves the download going on in the background (still one upstream `GET`,
the image cached); an upstream body whose digest is wrong never reaches the client complete
(the last chunk is held until verification) and the image fails with nothing committed; a
second reader of an image already downloading streams on its own; the hand-over itself: a
client that takes nothing is left behind after its timeout and the download goes on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imagecache.agent.cache.tee import Tee
from tests.agent.conftest import IMAGE_A, AgentFactory, eventually, random_payload
from tests.support.upstreams import FakeGlance, Faults, HttpFileServer, UpstreamServer

MIB = 2**20


@pytest.mark.parametrize("kind", ["http", "glance"])
async def test_a_read_through_miss_downloads_the_image_once(
    make_agent: AgentFactory,
    http_upstream: HttpFileServer,
    glance_upstream: FakeGlance,
    tmp_path: Path,
    kind: str,
) -> None:
    server: UpstreamServer = http_upstream if kind == "http" else glance_upstream
    data = random_payload(9 * MIB + 12_345, "tee")  # three chunks
    server.add(IMAGE_A, data)
    settings: dict[str, Any] = {}
    if kind == "glance":
        token = tmp_path / "upstream-token"
        token.write_text("upstream-secret\n")
        settings = {"upstream_token_file": token}
    agent = await make_agent(server.upstream, **settings)
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(data))
        assert await response.read() == data
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    assert server.count("GET", IMAGE_A) == 1, "the client and the cache share one stream"
    assert (agent.cache_dir / "images" / IMAGE_A).read_bytes() == data
    assert not list((agent.cache_dir / "incomplete").iterdir())


async def test_a_client_that_disconnects_leaves_the_download_going(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = random_payload(9 * MIB, "gone")
    http_upstream.add(IMAGE_A, data)
    http_upstream.faults[IMAGE_A] = Faults(stall_after=6 * MIB)
    agent = await make_agent(http_upstream.upstream)
    response = await agent.client.get(f"/v2/images/{IMAGE_A}/file")
    assert response.status == 200
    first = await response.content.readexactly(MIB)
    assert first == data[:MIB]
    response.close()  # the client goes away mid-transfer
    http_upstream.release_stalls()
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    assert (agent.cache_dir / "images" / IMAGE_A).read_bytes() == data
    assert http_upstream.count("GET", IMAGE_A) == 1


async def test_wrong_bytes_never_reach_the_client_complete_nor_the_cache(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = random_payload(5 * MIB, "corrupt")
    http_upstream.add(IMAGE_A, data)
    http_upstream.faults[IMAGE_A] = Faults(corrupt=True)
    agent = await make_agent(http_upstream.upstream)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
            assert response.status == 200
            async for piece in response.content.iter_any():
                received += piece
    assert len(received) < len(data), "the last chunk waits for verification"
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "checksum mismatch" in report["error"]
    assert not (agent.cache_dir / "images" / IMAGE_A).exists()
    assert http_upstream.count("GET", IMAGE_A) == 1


async def test_a_second_reader_of_an_image_downloading_streams_on_its_own(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = random_payload(5 * MIB, "second")
    http_upstream.add(IMAGE_A, data)
    http_upstream.faults[IMAGE_A] = Faults(stall_after=4 * MIB + 1)
    agent = await make_agent(http_upstream.upstream)
    first = await agent.client.get(f"/v2/images/{IMAGE_A}/file")
    await agent.wait_for(IMAGE_A, "caching")
    second = agent.client.get(f"/v2/images/{IMAGE_A}/file")
    await eventually(lambda: http_upstream.count("GET", IMAGE_A) == 1)
    http_upstream.release_stalls()
    async with second as response:
        assert await response.read() == data
    assert await first.read() == data
    first.close()
    await agent.wait_for(IMAGE_A, "cached")
    assert http_upstream.count("GET", IMAGE_A) == 2


async def test_a_client_that_takes_nothing_is_left_behind() -> None:
    tee = Tee(client_timeout=0.05)
    tee.started()
    for number in range(5):  # two wait for the client, then it is given up on
        await asyncio.wait_for(tee.offer(bytes([number])), 5)
    assert tee.client_gone
    tee.finish(last=b"end")
    assert [chunk async for chunk in tee.chunks()] == []
