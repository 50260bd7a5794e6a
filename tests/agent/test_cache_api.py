"""The Glance cache API, row by row (SPEC §2.4), against an in-process agent on a file upstream.

Covers: list shape; PUT 202 with an empty body (and a JSON content type with no body); 404 for
unknown images and every kind of bad id; 400 for inactive images; DELETE one and clear with each
``x-image-cache-clear-target``; 405 with ``Allow``; ``/versions`` 200 and ``/`` 300; Glance's
error JSON shape; auth with ``X-Auth-Token`` and ``Bearer`` and a token file that changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.conftest import IMAGE_A, IMAGE_B, IMAGE_C, AgentFactory, payload
from tests.support.upstreams import write_file_image


@pytest.fixture
def images(upstream_dir: Path) -> None:
    write_file_image(upstream_dir, IMAGE_A, payload(300_000, 1))
    write_file_image(upstream_dir, IMAGE_B, payload(200_000, 2))
    write_file_image(upstream_dir, "not-active", payload(1000), status="queued")


def assert_glance_error(status: int, body: dict[str, object], expected: int) -> None:
    assert status == expected
    assert set(body) == {"code", "title", "message"}
    assert isinstance(body["code"], str) and body["code"].startswith(str(expected))


async def test_list_is_glance_shaped_when_empty(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    async with agent.client.get("/v2/cache") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["cached_images"] == [] and body["queued_images"] == []


async def test_put_answers_202_with_empty_body_and_caches(
    make_agent: AgentFactory, images: None
) -> None:
    agent = await make_agent()
    async with agent.client.put(
        f"/v2/cache/{IMAGE_A}", headers={"Content-Type": "application/json", "Content-Length": "0"}
    ) as response:
        assert response.status == 202
        assert await response.read() == b""
        assert response.headers["Content-Length"] == "0"
    report = await agent.wait_for(IMAGE_A, "cached")
    assert report["size"] == 300_000 and report["percent"] == 100 and report["attempts"] == 1
    listing = await agent.listing()
    [entry] = listing["cached_images"]
    assert entry["image_id"] == IMAGE_A and entry["size"] == 300_000 and entry["hits"] == 0
    assert isinstance(entry["last_accessed"], float) and isinstance(entry["last_modified"], float)
    assert listing["queued_images"] == []
    assert (agent.cache_dir / "images" / IMAGE_A).read_bytes() == payload(300_000, 1)


async def test_put_is_visible_in_queue_at_once(make_agent: AgentFactory, images: None) -> None:
    agent = await make_agent(workers=1)
    # With one worker busy on a stalled image, later PUTs must show in queued_images at once.
    assert await agent.put(IMAGE_A) == 202
    assert await agent.put(IMAGE_B) == 202
    listing = await agent.listing()
    seen = {e["image_id"] for e in listing["cached_images"]} | set(listing["queued_images"])
    assert {IMAGE_A, IMAGE_B} <= seen
    await agent.wait_for(IMAGE_A, "cached")
    await agent.wait_for(IMAGE_B, "cached")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/v2/cache/{IMAGE_C}", id="unknown-image"),
        pytest.param("/v2/cache/..", id="dot-dot"),
        pytest.param("/v2/cache/%2E%2E", id="encoded-dot-dot"),
        pytest.param("/v2/cache/a%2Fb", id="encoded-slash"),
        pytest.param("/v2/cache/a%00b", id="nul"),
        pytest.param("/v2/cache/" + "a" * 129, id="too-long"),
        pytest.param("/v2/cache/.hidden", id="leading-dot"),
        pytest.param("/v2/cache/a%20b", id="space"),
    ],
)
async def test_put_unknown_or_bad_id_is_404(
    make_agent: AgentFactory, images: None, path: str
) -> None:
    agent = await make_agent()
    async with agent.client.put(path) as response:
        assert_glance_error(response.status, await response.json(), 404)
        assert response.content_type == "application/json"
    assert not any((agent.cache_dir / "incomplete").iterdir())


async def test_put_inactive_image_is_400(make_agent: AgentFactory, images: None) -> None:
    agent = await make_agent()
    async with agent.client.put("/v2/cache/not-active") as response:
        assert_glance_error(response.status, await response.json(), 400)
    assert (await agent.report("not-active"))["state"] == "absent"


async def test_delete_one_image(make_agent: AgentFactory, images: None) -> None:
    agent = await make_agent()
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    async with agent.client.delete(f"/v2/cache/{IMAGE_A}") as response:
        assert response.status == 204
        assert await response.read() == b""
    assert (await agent.listing())["cached_images"] == []
    assert not (agent.cache_dir / "images" / IMAGE_A).exists()
    async with agent.client.delete("/v2/cache/..%2F..") as response:
        assert_glance_error(response.status, await response.json(), 404)


async def test_delete_of_a_valid_id_the_agent_does_not_hold_is_204(
    make_agent: AgentFactory,
) -> None:
    """docs/glance-compatibility.md: idempotent; the agent has no image database to check."""
    agent = await make_agent()
    async with agent.client.delete(f"/v2/cache/{IMAGE_C}") as response:
        assert response.status == 204
        assert await response.read() == b""
    assert (await agent.report(IMAGE_C))["state"] == "absent"


@pytest.mark.parametrize(
    ("header", "left_cached", "left_queued"),
    [
        pytest.param(None, False, False, id="absent-clears-both"),
        pytest.param("", False, False, id="empty-clears-both"),
        pytest.param("cache", False, True, id="cache-only"),
        pytest.param("queue", True, False, id="queue-only"),
    ],
)
async def test_clear_targets(
    make_agent: AgentFactory,
    upstream_dir: Path,
    images: None,
    header: str | None,
    left_cached: bool,
    left_queued: bool,
) -> None:
    agent = await make_agent(workers=1)
    await agent.put(IMAGE_A)
    await agent.wait_for(IMAGE_A, "cached")
    await agent.put(IMAGE_B)
    await agent.wait_for(IMAGE_B, "cached")
    write_file_image(upstream_dir, IMAGE_C, payload(1000))
    # Make the queue non-empty deterministically: stop the workers first.
    await agent.cache.pool.stop()
    assert await agent.put(IMAGE_C) == 202
    headers = {} if header is None else {"x-image-cache-clear-target": header}
    async with agent.client.delete("/v2/cache", headers=headers) as response:
        assert response.status == 204
    listing = await agent.listing()
    assert bool(listing["cached_images"]) is left_cached
    assert bool(listing["queued_images"]) is left_queued


async def test_clear_with_bad_target_is_400(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    async with agent.client.delete(
        "/v2/cache", headers={"x-image-cache-clear-target": "everything"}
    ) as response:
        assert_glance_error(response.status, await response.json(), 400)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("POST", "/v2/cache", {"GET", "DELETE"}, id="post-list"),
        pytest.param("PUT", "/v2/cache", {"GET", "DELETE"}, id="put-list"),
        pytest.param("POST", f"/v2/cache/{IMAGE_A}", {"GET", "PUT", "DELETE"}, id="post-one"),
        pytest.param("PATCH", f"/v2/cache/{IMAGE_A}", {"GET", "PUT", "DELETE"}, id="patch-one"),
    ],
)
async def test_other_methods_are_405_with_allow(
    make_agent: AgentFactory, method: str, path: str, allowed: set[str]
) -> None:
    agent = await make_agent()
    async with agent.client.request(method, path) as response:
        assert_glance_error(response.status, await response.json(), 405)
        assert set(response.headers["Allow"].split(",")) == allowed


@pytest.mark.parametrize(
    ("path", "status"),
    [pytest.param("/versions", 200, id="versions"), pytest.param("/", 300, id="root")],
)
async def test_versions_document(make_agent: AgentFactory, path: str, status: int) -> None:
    agent = await make_agent()
    async with agent.client.get(path) as response:
        assert response.status == status
        body = await response.json()
    ids = {v["id"] for v in body["versions"]}
    assert {f"v2.{n}" for n in range(17)} <= ids
    statuses = {v["status"] for v in body["versions"]}
    assert statuses == {"CURRENT", "SUPPORTED"}
    assert all(v["links"][0]["rel"] == "self" for v in body["versions"])


async def test_auth(make_agent: AgentFactory, tmp_path: Path, images: None) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("first-token\n\nsecond-token\n")
    agent = await make_agent(token_file=token_file)
    for headers in (
        {},
        {"X-Auth-Token": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic Zmlyc3QtdG9rZW4="},
    ):
        async with agent.client.get("/v2/cache", headers=headers) as response:
            assert_glance_error(response.status, await response.json(), 401)
        async with agent.client.put(f"/v2/cache/{IMAGE_A}", headers=headers) as response:
            assert response.status == 401
    async with agent.client.get("/v2/cache", headers={"X-Auth-Token": "first-token"}) as r:
        assert r.status == 200
    async with agent.client.get(
        "/v2/cache", headers={"Authorization": "Bearer second-token"}
    ) as response:
        assert response.status == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        async with agent.client.get(open_path) as response:
            assert response.status == 200, open_path
    token_file.write_text("rotated-token-with-another-length\n")
    async with agent.client.get("/v2/cache", headers={"X-Auth-Token": "first-token"}) as r:
        assert r.status == 401
    async with agent.client.get(
        "/v2/cache", headers={"X-Auth-Token": "rotated-token-with-another-length"}
    ) as response:
        assert response.status == 200
