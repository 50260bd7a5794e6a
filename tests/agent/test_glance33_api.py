"""Glance 33's additions, over real file and HTTP upstreams (SPEC §2.4, §2.8).

Covers: ``GET /v2/images/{id}`` and ``GET /v2/images`` from a file upstream's files and sidecars
(name filter, paging, 404, 400) and from an HTTP upstream (show by id, list by name only);
``POST /v2/cache/prune`` (LRU down to ``max_size`` after it was lowered across a restart, a
served image kept); ``POST /v2/cache/clean`` (invalid files and ownerless stalled partials);
``GET /v2/cache/nodes/{id}`` (self_url when cached, [] when not, 404 when unknown); the 405s
and the versions document up to v2.18. The same calls against a real Glance 33 are in
tests/openstack/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.agent.conftest import IMAGE_A, IMAGE_B, IMAGE_C, AgentFactory, payload
from tests.support.upstreams import HttpFileServer, write_file_image


async def test_show_and_list_images_from_file_sidecars(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    image = write_file_image(upstream_dir, IMAGE_A, payload(1000))
    sidecar = upstream_dir / f"{IMAGE_A}.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "name": "cirros"}))
    write_file_image(upstream_dir, IMAGE_B, payload(2000, seed=2))
    agent = await make_agent()
    async with agent.client.get(f"/v2/images/{IMAGE_A}") as response:
        assert response.status == 200
        doc = await response.json()
    assert doc["id"] == IMAGE_A and doc["name"] == "cirros" and doc["status"] == "active"
    assert doc["size"] == 1000 and doc["checksum"] == image.checksum
    assert doc["os_hash_value"] == image.os_hash_value
    assert doc["file"] == f"/v2/images/{IMAGE_A}/file" and doc["schema"] == "/v2/schemas/image"

    async with agent.client.get("/v2/images", params={"name": "cirros"}) as response:
        body = await response.json()
    assert [d["id"] for d in body["images"]] == [IMAGE_A]
    assert body["first"] == "/v2/images?name=cirros" and "next" not in body

    async with agent.client.get("/v2/images", params={"limit": "1"}) as response:
        first = await response.json()
    assert len(first["images"]) == 1 and "marker=" in first["next"]
    async with agent.client.get(first["next"]) as response:
        second = await response.json()
    assert {first["images"][0]["id"], second["images"][0]["id"]} == {IMAGE_A, IMAGE_B}


async def test_image_errors_are_glances(make_agent: AgentFactory, upstream_dir: Path) -> None:
    write_file_image(upstream_dir, IMAGE_A, payload(10))
    agent = await make_agent()
    async with agent.client.get(f"/v2/images/{IMAGE_B}") as response:
        assert response.status == 404
        assert (await response.json())["code"] == "404 Not Found"
    async with agent.client.get("/v2/images", params={"marker": IMAGE_B}) as response:
        assert response.status == 400
    async with agent.client.get("/v2/images", params={"limit": "many"}) as response:
        assert response.status == 400
    async with agent.client.delete(f"/v2/images/{IMAGE_A}") as response:
        assert response.status == 405 and response.headers["Allow"] == "GET"


async def test_http_upstream_shows_by_id_and_lists_by_name_only(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add("disk.img", payload(300))
    agent = await make_agent(upstream=http_upstream.upstream)
    async with agent.client.get("/v2/images/disk.img") as response:
        doc = await response.json()
    assert doc["size"] == 300 and doc["name"] == "disk.img"
    async with agent.client.get("/v2/images", params={"name": "disk.img"}) as response:
        assert [d["id"] for d in (await response.json())["images"]] == ["disk.img"]
    async with agent.client.get("/v2/images") as response:
        assert (await response.json())["images"] == []  # it cannot enumerate the server


async def test_prune_evicts_lru_down_to_a_lowered_max_size(
    make_agent: AgentFactory, upstream_dir: Path, tmp_path: Path
) -> None:
    for n, image_id in enumerate((IMAGE_A, IMAGE_B, IMAGE_C)):
        write_file_image(upstream_dir, image_id, payload(1000, seed=n))
    cache_dir = tmp_path / "kept"
    agent = await make_agent(cache_dir=cache_dir)
    for image_id in (IMAGE_A, IMAGE_B, IMAGE_C):  # cached in this order: A is the LRU
        assert await agent.put(image_id) == 202
        await agent.wait_for(image_id, "cached")
    async with agent.client.post("/v2/cache/prune") as response:
        assert response.status == 200
        assert await response.json() == {"total_files_pruned": 0, "total_bytes_pruned": 0}
    await agent.client.close()

    smaller = await make_agent(cache_dir=cache_dir, max_size=1500)
    async with smaller.client.get(f"/v2/images/{IMAGE_B}/file") as reading:  # B: used last
        assert reading.status == 200
        await reading.read()
    async with smaller.client.post("/v2/cache/prune") as response:
        assert response.status == 200
        assert await response.json() == {"total_files_pruned": 2, "total_bytes_pruned": 2000}
    listing = await smaller.listing()
    assert [e["image_id"] for e in listing["cached_images"]] == [IMAGE_B]
    assert sorted(os.listdir(cache_dir / "images")) == [IMAGE_B]


async def test_clean_removes_invalid_and_stalled_partials(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    agent = await make_agent()
    (agent.cache_dir / "invalid" / IMAGE_A).write_bytes(b"bad")
    stalled = agent.cache_dir / "incomplete" / IMAGE_B
    stalled.write_bytes(b"half")
    os.utime(stalled, (1.0, 1.0))
    fresh = agent.cache_dir / "incomplete" / IMAGE_C
    fresh.write_bytes(b"half")
    async with agent.client.post("/v2/cache/clean") as response:
        assert response.status == 200 and await response.read() == b""
    assert not (agent.cache_dir / "invalid" / IMAGE_A).exists()
    assert not stalled.exists() and fresh.exists()
    for method, path in (("GET", "/v2/cache/clean"), ("PUT", "/v2/cache/prune")):
        async with agent.client.request(method, path) as response:  # not image ids, as in Glance
            assert response.status == 405 and response.headers["Allow"] == "POST"


async def test_nodes_name_this_agent_when_cached(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, payload(100))
    agent = await make_agent(self_url="http://10.1.2.3:9393")
    async with agent.client.get(f"/v2/cache/nodes/{IMAGE_A}") as response:
        assert response.status == 200 and await response.json() == []
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    async with agent.client.get(f"/v2/cache/nodes/{IMAGE_A}") as response:
        assert await response.json() == ["http://10.1.2.3:9393"]
    async with agent.client.get(f"/v2/cache/nodes/{IMAGE_B}") as response:
        assert response.status == 404
    async with agent.client.post(f"/v2/cache/nodes/{IMAGE_A}") as response:
        assert response.status == 405 and response.headers["Allow"] == "GET"
    async with agent.client.delete("/v2/cache/clean") as response:
        assert response.status == 405 and response.headers["Allow"] == "POST"


async def test_versions_reach_v2_18(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    async with agent.client.get("/versions") as response:
        versions = (await response.json())["versions"]
    assert versions[0]["id"] == "v2.18" and versions[0]["status"] == "CURRENT"
    assert {v["id"] for v in versions} == {f"v2.{n}" for n in range(19)}
