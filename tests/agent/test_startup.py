"""What a real agent process makes of its cache directory at start (issue 11 "startup trust").

Covers: a deleted database makes the agent re-adopt its verified images (sealed at commit)
instead of deleting them, without asking the upstream again; a symlink put in place of a cached
image is removed, never followed (the file it points to is untouched and never served); a
same-size overwrite of a cached image is detected (identity changed, re-hash differs), moved to
``invalid/`` and never served; ``invalid/`` is pruned to its bound at start and counted in
``/metrics`` (``imagecache_invalid_files``/``_bytes``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import IMAGE_A, IMAGE_B, AgentFactory, eventually, payload
from tests.agent.test_process import call, report, wait_until
from tests.support.agents import AgentProcess
from tests.support.upstreams import HttpFileServer, write_file_image

INVALID_KEEP = 4


@pytest.fixture
def upstream() -> Iterator[HttpFileServer]:
    server = HttpFileServer()
    with server.running_in_thread():
        yield server


@pytest.fixture
def agent(tmp_path: Path, upstream: HttpFileServer) -> Iterator[AgentProcess]:
    process = AgentProcess(cache_dir=tmp_path / "cache", upstream=upstream.upstream)
    yield process
    process.kill()


def cache_two(agent: AgentProcess, upstream: HttpFileServer) -> dict[str, bytes]:
    images = {IMAGE_A: payload(300_000, 1), IMAGE_B: payload(200_000, 2)}
    for image_id, data in images.items():
        upstream.add(image_id, data)
    agent.start()
    for image_id in images:
        assert call(agent, "PUT", f"/v2/cache/{image_id}")[0] == 202
    for image_id in images:
        wait_until(lambda i=image_id: report(agent, i)["state"] == "cached", what=image_id)
    assert agent.stop() == 0
    return images


def listing(agent: AgentProcess) -> dict[str, Any]:
    status, body = call(agent, "GET", "/v2/cache")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def metric(agent: AgentProcess, name: str) -> float:
    status, body = call(agent, "GET", "/metrics")
    assert status == 200
    [value] = [
        float(line.split()[1]) for line in body.decode().splitlines() if line.startswith(name + " ")
    ]
    return value


def gets(upstream: HttpFileServer) -> int:
    return sum(1 for r in upstream.requests if r.method == "GET")


def test_deleted_database_readopts_verified_images(
    agent: AgentProcess, upstream: HttpFileServer
) -> None:
    images = cache_two(agent, upstream)
    for name in ("imagecache.db", "imagecache.db-wal", "imagecache.db-shm"):
        (agent.cache_dir / name).unlink(missing_ok=True)
    fetched = gets(upstream)

    agent.start()
    cached = {entry["image_id"] for entry in listing(agent)["cached_images"]}
    assert cached == set(images)
    for image_id, data in images.items():
        assert call(agent, "GET", f"/v2/images/{image_id}/file") == (200, data)
    assert gets(upstream) == fetched, "re-adopted images must not be downloaded again"


def test_symlink_in_place_of_a_cached_image_is_removed_not_followed(
    agent: AgentProcess, upstream: HttpFileServer, tmp_path: Path
) -> None:
    images = cache_two(agent, upstream)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * len(images[IMAGE_A]))
    link = agent.cache_dir / "images" / IMAGE_A
    link.unlink()
    link.symlink_to(secret)

    agent.start()
    assert not link.is_symlink() and not link.exists(), "the symlink must be removed"
    assert secret.read_bytes() == b"s" * len(images[IMAGE_A]), "its target is untouched"
    cached = {entry["image_id"] for entry in listing(agent)["cached_images"]}
    assert cached == {IMAGE_B}
    status, body = call(agent, "GET", f"/v2/images/{IMAGE_A}/file")
    assert status == 200 and body == images[IMAGE_A], "served from the upstream, not the link"


def test_same_size_overwrite_is_detected_and_never_served(
    agent: AgentProcess, upstream: HttpFileServer
) -> None:
    images = cache_two(agent, upstream)
    path = agent.cache_dir / "images" / IMAGE_A
    with path.open("r+b") as handle:  # same size, same inode: only the content (and mtime) moves
        handle.write(b"\0" * 1000)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))

    agent.start()
    cached = {entry["image_id"] for entry in listing(agent)["cached_images"]}
    assert cached == {IMAGE_B}
    assert (agent.cache_dir / "invalid" / IMAGE_A).exists(), "kept for inspection"
    assert metric(agent, "imagecache_invalid_files") == 1
    status, body = call(agent, "GET", f"/v2/images/{IMAGE_A}/file")
    assert status == 200 and body == images[IMAGE_A]


def test_invalid_directory_is_bounded_at_start(agent: AgentProcess, tmp_path: Path) -> None:
    invalid = agent.cache_dir / "invalid"
    invalid.mkdir(parents=True)
    for number in range(10):
        rejected = invalid / f"rejected-{number}"
        rejected.write_bytes(b"x" * 1000)
        os.utime(rejected, ns=(number * 10**9, number * 10**9))
    agent.start()
    assert sorted(p.name for p in invalid.iterdir()) == [
        f"rejected-{number}" for number in range(10 - INVALID_KEEP, 10)
    ]
    assert metric(agent, "imagecache_invalid_files") == INVALID_KEEP
    assert metric(agent, "imagecache_invalid_bytes") == INVALID_KEEP * 1000


async def test_image_deleted_while_served_loses_its_seal_at_once(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, payload(10_000))
    agent = await make_agent()
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    seal = agent.cache_dir / "seals" / f"{IMAGE_A}.json"
    assert seal.exists()
    serving = agent.cache.pin(IMAGE_A)
    assert serving is not None
    _, _, release = serving
    assert (await agent.client.delete(f"/v2/cache/{IMAGE_A}")).status == 204
    assert (agent.cache_dir / "images" / IMAGE_A).exists(), "still being read"
    assert not seal.exists(), "a restart now would re-adopt a deleted image"
    release()
    await eventually(lambda: not (agent.cache_dir / "images" / IMAGE_A).exists(), within=10)
