"""Caching semantics beyond Glance (SPEC §2.5) over HTTP, fake-Glance and file upstreams.

Covers: idempotent PUT (upstream byte requests counted); a failed image re-queued by PUT; transient
5xx retried; a stall past ``stall_timeout`` retried then failed with its reason; a dropped
connection resumed with ``Range`` from ``incomplete/``; an upstream that ignores ``Range`` (start
over); wrong bytes → ``invalid/<id>`` and a checksum failure; too few bytes → size failure; image
larger than ``max_size``; LRU eviction; DELETE cancelling a download in flight; progress reported
while caching, also from a slow upstream that never pauses; one failure not stopping the pool;
Glance upstream (token forwarded, metadata fields verified, non-UUID ids refused).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

from tests.agent.conftest import IMAGE_A, IMAGE_B, IMAGE_C, AgentFactory, payload
from tests.agent.faults_upstream import ThrottledServer
from tests.support.upstreams import FakeGlance, Faults, HttpFileServer, write_file_image


async def test_put_is_idempotent(make_agent: AgentFactory, http_upstream: HttpFileServer) -> None:
    http_upstream.add(IMAGE_A, payload(500_000))
    http_upstream.faults[IMAGE_A] = Faults(stall_after=100_000, stall_seconds=30)
    agent = await make_agent(http_upstream.upstream)
    for _ in range(5):
        assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "caching")
    assert report["queue_position"] == 0
    await asyncio.gather(*(agent.put(IMAGE_A) for _ in range(5)))
    http_upstream.release_stalls()
    await agent.wait_for(IMAGE_A, "cached")
    for _ in range(3):
        assert await agent.put(IMAGE_A) == 202
    await asyncio.sleep(0.1)
    assert http_upstream.count("GET", IMAGE_A) == 1
    assert (await agent.report(IMAGE_A))["attempts"] == 1


async def test_transient_5xx_is_retried(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(100_000))
    http_upstream.faults[IMAGE_A] = Faults(fail_times=2, fail_status=503)
    agent = await make_agent(http_upstream.upstream, retries=3)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached" and report["attempts"] == 3


async def test_failure_keeps_reason_until_requeued(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(100_000))
    http_upstream.faults[IMAGE_A] = Faults(fail_times=5, fail_status=502)
    agent = await make_agent(http_upstream.upstream, retries=2)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "502" in report["error"] and report["attempts"] == 2
    listing = await agent.listing()
    assert [r["image_id"] for r in listing["failed_images"]] == [IMAGE_A]
    assert IMAGE_A not in listing["queued_images"]
    http_upstream.faults[IMAGE_A] = Faults()
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached")
    assert report["error"] is None


async def test_stall_is_transient_and_reported(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(300_000))
    http_upstream.default_faults = Faults(stall_after=10_000, stall_seconds=30)
    agent = await make_agent(http_upstream.upstream, stall_timeout=0.3, retries=2)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "stalled" in report["error"] and report["attempts"] == 2


async def test_dropped_connection_resumes_with_range(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = payload(3_000_000)
    http_upstream.add(IMAGE_A, data)
    http_upstream.faults[IMAGE_A] = Faults(drop_after=1_200_000, drop_times=1)
    agent = await make_agent(http_upstream.upstream)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    ranges = [s.range for s in http_upstream.requests if s.method == "GET"]
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 1_200_000
    assert (agent.cache_dir / "images" / IMAGE_A).read_bytes() == data


async def test_upstream_ignoring_range_starts_over(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = payload(3_000_000)
    http_upstream.add(IMAGE_A, data)
    http_upstream.faults[IMAGE_A] = Faults(drop_after=1_500_000, honour_range=False)
    agent = await make_agent(http_upstream.upstream)
    await agent.put(IMAGE_A)
    assert (await agent.wait_for(IMAGE_A, "cached", "failed"))["state"] == "cached"
    assert (agent.cache_dir / "images" / IMAGE_A).read_bytes() == data


async def test_wrong_bytes_go_to_invalid(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: object
) -> None:
    glance_upstream.add(IMAGE_A, payload(200_000))
    glance_upstream.faults[IMAGE_A] = Faults(corrupt=True)
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=_token(tmp_path))
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "checksum mismatch" in report["error"] and report["attempts"] == 1
    assert (agent.cache_dir / "invalid" / IMAGE_A).exists()
    assert not (agent.cache_dir / "images" / IMAGE_A).exists()
    assert (await agent.listing())["cached_images"] == []


async def test_too_few_bytes_is_a_size_failure(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: object
) -> None:
    glance_upstream.add(IMAGE_A, payload(200_000))
    glance_upstream.faults[IMAGE_A] = Faults(short_by=1000)
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=_token(tmp_path))
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "size mismatch" in report["error"]


async def test_glance_upstream(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: object
) -> None:
    data = payload(700_000)
    glance_upstream.add(IMAGE_A, data)
    glance_upstream.add(IMAGE_B, b"", status="queued")
    glance_upstream.add("not-a-uuid", data)
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=_token(tmp_path))
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    assert await agent.put(IMAGE_B) == 400
    assert await agent.put("not-a-uuid") == 404
    assert await agent.put(IMAGE_C) == 404
    assert {s.token for s in glance_upstream.requests} == {"upstream-secret"}
    listing = await agent.listing()
    assert listing["cached_images"][0]["checksum"] == hashlib.md5(data).hexdigest()


async def test_glance_upstream_with_wrong_token_is_refused(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: object
) -> None:
    glance_upstream.add(IMAGE_A, payload(1000))
    glance_upstream.token = "another"
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=_token(tmp_path))
    assert await agent.put(IMAGE_A) == 503  # fixable on our side: the operator retries


async def test_image_larger_than_max_size_fails(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(300_000))
    agent = await make_agent(http_upstream.upstream, max_size=200_000)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "failed")
    assert "larger than max_size" in report["error"]
    assert http_upstream.count("GET", IMAGE_A) == 0


async def test_lru_eviction(make_agent: AgentFactory, http_upstream: HttpFileServer) -> None:
    for n, image_id in enumerate((IMAGE_A, IMAGE_B, IMAGE_C)):
        http_upstream.add(image_id, payload(100_000, n))
    agent = await make_agent(http_upstream.upstream, max_size=250_000)
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    await agent.put(IMAGE_B)
    await agent.wait_for(IMAGE_B, "cached")
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:  # A is now fresher
        assert response.status == 200
        await response.read()
    await agent.put(IMAGE_C)
    await agent.wait_for(IMAGE_C, "cached")
    cached = {e["image_id"] for e in (await agent.listing())["cached_images"]}
    assert cached == {IMAGE_A, IMAGE_C}
    assert not (agent.cache_dir / "images" / IMAGE_B).exists()
    async with agent.client.get("/metrics") as response:
        assert "imagecache_evictions_total 1.0" in await response.text()


async def test_delete_cancels_download_in_flight(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(2_000_000))
    http_upstream.faults[IMAGE_A] = Faults(stall_after=1_000_000, stall_seconds=30)
    agent = await make_agent(http_upstream.upstream, stall_timeout=30)
    await agent.put(IMAGE_A)
    report = await agent.wait_for(IMAGE_A, "caching")
    report = await agent.wait_report(IMAGE_A, lambda r: r["bytes"] >= 1_000_000)
    assert report["percent"] == 50 and report["size"] == 2_000_000
    async with agent.client.delete(f"/v2/cache/{IMAGE_A}") as response:
        assert response.status == 204
    assert not agent.cache.pool.running
    assert (await agent.report(IMAGE_A))["state"] == "absent"
    assert not (agent.cache_dir / "incomplete" / IMAGE_A).exists()
    listing = await agent.listing()
    assert listing["queued_images"] == [] and listing["caching_images"] == []


async def test_progress_moves_while_a_slow_upstream_streams_without_pauses(
    make_agent: AgentFactory,
) -> None:
    """A steady trickle (16 KiB pieces, never a 0.2 s pause) must still show progress: the
    download buffer is handed on after `FLUSH_AFTER` even while bytes keep coming."""
    server = ThrottledServer()
    await server.start()
    try:
        size = 3 * 2**20  # below the 4 MiB chunk: without the time-based flush, 0 % until done
        server.add(IMAGE_A, payload(size))
        server.throttle[IMAGE_A] = 1.5 * 2**20  # two seconds
        agent = await make_agent(server.upstream)
        await agent.put(IMAGE_A)
        report = await agent.wait_report(IMAGE_A, lambda r: 0 < r["bytes"] < size)
        assert report["state"] == "caching" and 0 <= report["percent"] < 100, report
        await agent.wait_for(IMAGE_A, "cached")
    finally:
        await server.close()


async def test_one_failure_does_not_stop_the_pool(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(100_000), checksum="0" * 32)
    http_upstream.add(IMAGE_B, payload(100_000))
    http_upstream.faults[IMAGE_A] = Faults(corrupt=True)
    agent = await make_agent(http_upstream.upstream, workers=1)
    await agent.put(IMAGE_A)
    await agent.put(IMAGE_B)
    assert (await agent.wait_for(IMAGE_A, "failed"))["error"]
    await agent.wait_for(IMAGE_B, "cached")
    async with agent.client.get("/readyz") as response:
        assert response.status == 200


def _token(tmp_path: object) -> str:
    path = Path(str(tmp_path)) / "upstream-token"
    path.write_text("upstream-secret\n")
    return str(path)


async def test_idle_worker_starts_at_once(make_agent: AgentFactory, upstream_dir: Path) -> None:
    for n, image_id in enumerate((IMAGE_A, IMAGE_B, IMAGE_C)):
        write_file_image(upstream_dir, image_id, payload(10_000, n))
    agent = await make_agent()
    pool = agent.cache.pool
    for image_id in (IMAGE_A, IMAGE_B, IMAGE_C):
        assert await agent.put(image_id) == 202
        # An idle worker is woken by the PUT itself: within a few turns of the event loop,
        # without any clock. A worker polling on a timer for work would miss this.
        for _ in range(20):
            if image_id in pool.running or agent.cache.holds(image_id):
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError(f"no worker took {image_id} without waiting on a timer")
        await agent.wait_for(image_id, "cached")


async def test_file_sidecar_checksums_are_verified(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, payload(50_000), os_hash_value="ab" * 64)
    write_file_image(upstream_dir, IMAGE_B, payload(50_000), sidecar=False)
    agent = await make_agent()
    await agent.put(IMAGE_A)
    await agent.put(IMAGE_B)
    assert "os_hash mismatch" in (await agent.wait_for(IMAGE_A, "failed"))["error"]
    assert (await agent.wait_for(IMAGE_B, "cached"))["size"] == 50_000


async def test_eviction_never_takes_an_image_being_served(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    for n, image_id in enumerate((IMAGE_A, IMAGE_B, IMAGE_C)):
        http_upstream.add(image_id, payload(100_000, n))
    agent = await make_agent(http_upstream.upstream, max_size=250_000)
    for image_id in (IMAGE_A, IMAGE_B):
        await agent.put(image_id)
        await agent.wait_for(image_id, "cached")
    serving = agent.cache.pin(IMAGE_B)  # B is being sent to a client...
    assert serving is not None
    # ...and is the least recently used: eviction must still skip it.
    agent.cache.records[IMAGE_B] = replace(agent.cache.records[IMAGE_B], last_accessed=0.0)
    await agent.put(IMAGE_C)
    await agent.wait_for(IMAGE_C, "cached")
    cached = {e["image_id"] for e in (await agent.listing())["cached_images"]}
    assert cached == {IMAGE_B, IMAGE_C}
    serving[2]()
