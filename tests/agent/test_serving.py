"""Serving images and operations endpoints (SPEC §2.6, §2.7), in process.

Covers: a cached image served from disk with Content-Length, Content-MD5, Range and HEAD, each
GET counted as a hit and HEAD not; a miss streamed from the upstream and queued
(``cache_on_read``) or not (``--no-cache-on-read``), and a HEAD miss never queued; a bad id on
the file path; /healthz, /readyz, /metrics names, and
/openapi.json listing every route.
"""

from __future__ import annotations

import hashlib

from tests.agent.conftest import IMAGE_A, IMAGE_B, AgentFactory, eventually, payload
from tests.support.upstreams import HttpFileServer


async def test_cached_image_is_served_with_range_and_hits(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = payload(1_000_000)
    http_upstream.add(IMAGE_A, data)
    agent = await make_agent(http_upstream.upstream)
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    path = f"/v2/images/{IMAGE_A}/file"
    async with agent.client.get(path) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
        assert await response.read() == data
    async with agent.client.get(path, headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert await response.read() == data[100:200]
    async with agent.client.head(path) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(data))
    [entry] = (await agent.listing())["cached_images"]
    assert entry["hits"] == 2, "two GETs are hits; a HEAD reads nothing"
    assert entry["last_accessed"] >= entry["last_modified"]
    assert http_upstream.count("GET", IMAGE_A) == 1


async def test_miss_streams_from_upstream_and_queues(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    data = payload(600_000)
    http_upstream.add(IMAGE_A, data)
    agent = await make_agent(http_upstream.upstream)
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(data))
        assert await response.read() == data
    await agent.wait_for(IMAGE_A, "cached")
    async with agent.client.get("/metrics") as response:
        text = await response.text()
    assert "imagecache_misses_total 1.0" in text


async def test_head_on_a_miss_answers_from_upstream_metadata_and_queues_nothing(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(1000))
    agent = await make_agent(http_upstream.upstream)  # cache_on_read is on
    async with agent.client.head(f"/v2/images/{IMAGE_A}/file") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1000"
    assert (await agent.report(IMAGE_A))["state"] == "absent"
    assert http_upstream.count("GET", IMAGE_A) == 0
    async with agent.client.get("/metrics") as response:
        assert "imagecache_misses_total 0.0" in await response.text()


async def test_miss_without_cache_on_read(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(1000))
    agent = await make_agent(http_upstream.upstream, cache_on_read=False)
    async with agent.client.head(f"/v2/images/{IMAGE_A}/file") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1000"
    async with agent.client.get(f"/v2/images/{IMAGE_B}/file") as response:
        assert response.status == 404
        assert (await response.json())["code"] == "404 Not Found"
    async with agent.client.get("/v2/images/..%2Fx/file") as response:
        assert response.status == 404
    assert (await agent.report(IMAGE_A))["state"] == "absent"


async def test_operations_endpoints(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    async with agent.client.get("/healthz") as response:
        assert response.status == 200
    async with agent.client.get("/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"] == {
            "database": True,
            "workers": True,
            "cache_dir": True,
        }
    async with agent.client.get("/metrics") as response:
        text = await response.text()
    for name in (
        "imagecache_cache_bytes",
        "imagecache_cache_images",
        "imagecache_queue_length",
        "imagecache_downloads_in_flight",
        "imagecache_downloaded_bytes_total",
        "imagecache_download_duration_seconds",
        "imagecache_hits_total",
        "imagecache_misses_total",
        "imagecache_evictions_total",
    ):
        assert name in text, name
    await agent.cache.pool.stop()
    async with agent.client.get("/readyz") as response:
        assert response.status == 503


async def test_openapi_document_lists_every_route(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    async with agent.client.get("/openapi.json") as response:
        assert response.status == 200
        doc = await response.json()
    assert doc["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, ops in doc["paths"].items()
        for method in ops
        if method != "parameters"
    }
    served = set()
    for resource in agent.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method == "*":
                continue  # a catch-all that only answers 405 for the undocumented methods
            if route.method != "HEAD" or path.endswith("/file"):
                served.add((path, route.method))
    assert served <= documented, served - documented


async def test_crashed_worker_is_replaced(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(1000))
    agent = await make_agent(http_upstream.upstream, workers=2)
    pool = agent.cache.pool
    victim = pool._workers[0]
    victim.cancel()  # as if the task died
    await eventually(lambda: pool._workers[0] is not victim and pool.alive())
    async with agent.client.get("/readyz") as response:
        assert response.status == 200
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    async with agent.client.get("/metrics") as response:
        assert "imagecache_worker_restarts_total 1.0" in await response.text()
