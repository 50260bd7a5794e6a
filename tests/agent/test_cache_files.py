"""Cache files are never followed through a link (issue 16, item 4; SPEC §2.10).

Covers: ``images/<id>`` replaced by a symlink to a file outside the cache while the agent runs
is not served by GET or HEAD (the request is answered as a miss, from the upstream), the
outside file's bytes never leave and the file itself is untouched, and the image is cached
again as a regular file; a symlink in place of ``incomplete/<id>`` is neither written through
nor hashed nor committed: the outside file keeps its bytes and the image is cached from the
upstream.
"""

from __future__ import annotations

from pathlib import Path

from tests.agent.conftest import IMAGE_A, AgentFactory, random_payload
from tests.support.upstreams import HttpFileServer

SECRET = b"outside the cache: never served\n" * 1000


async def test_symlink_swapped_into_images_is_never_served(
    make_agent: AgentFactory, http_upstream: HttpFileServer, tmp_path: Path
) -> None:
    data = random_payload(len(SECRET), "swapped")
    http_upstream.add(IMAGE_A, data)
    agent = await make_agent(http_upstream.upstream)
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    outside = tmp_path / "secret"
    outside.write_bytes(SECRET)
    image = agent.cache_dir / "images" / IMAGE_A
    image.unlink()
    image.symlink_to(outside)

    path = f"/v2/images/{IMAGE_A}/file"
    async with agent.client.head(path) as response:
        assert response.status in (200, 404), response.status
    async with agent.client.get(path) as response:
        body = await response.read()
        assert SECRET[:64] not in body
        assert response.status == 200, "a broken cache entry is a miss: served from upstream"
        assert body == data
    assert outside.read_bytes() == SECRET, "the link's target is never touched"
    await agent.wait_report(IMAGE_A, lambda r: r["state"] == "cached" and r["attempts"] >= 1)
    assert not image.is_symlink() and image.read_bytes() == data
    async with agent.client.get(path) as response:
        assert await response.read() == data


async def test_symlink_in_place_of_the_partial_is_not_written_through(
    make_agent: AgentFactory, http_upstream: HttpFileServer, tmp_path: Path
) -> None:
    data = random_payload(300_000, "partial")
    http_upstream.add(IMAGE_A, data)
    agent = await make_agent(http_upstream.upstream)
    outside = tmp_path / "victim"
    outside.write_bytes(SECRET)
    (agent.cache_dir / "incomplete" / IMAGE_A).symlink_to(outside)
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    assert outside.read_bytes() == SECRET, "the agent wrote through a symlink"
    image = agent.cache_dir / "images" / IMAGE_A
    assert not image.is_symlink() and image.read_bytes() == data
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
        assert await response.read() == data
