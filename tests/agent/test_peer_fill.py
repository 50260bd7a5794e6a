"""Fleet fill (SPEC §2.9, issue 15): an agent takes an image's bytes from a peer agent.

Covers: a real peer agent serving the bytes (upstream read once for two agents, report and
metrics say the peer); every way a peer fails — wrong bytes of the right length, dying
mid-transfer, evicting the image mid-transfer, stalling, answering 429, 401, not holding the
image — falls back to the upstream at once from byte 0, the image ends cached with verified
bytes, the reason is in the report and the metric; the upstream credential never reaches a
peer (a recording `FakeGlance` is the peer); an upstream without digests makes the hint
ignored (the peer is never contacted); the hint survives a restart, the credential does not
(the download falls back, and the credential is on disk nowhere); the header is refused without
``peer_networks``, outside it, in a non-base URL, and from a Keystone user; a peer read is served
only from the cache (404 on a miss, nothing queued, the upstream untouched), pinned while it is
sent, and bounded by ``peer_serve_limit`` (429 with Retry-After); with per-pod credentials a
token of this pod's peer audience opens peer reads and nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from imagecache.agent.http.appkeys import SETTINGS
from imagecache.agent.http.middlewares import (
    PRINCIPAL,
    Principal,
    auth_middleware,
    errors_middleware,
)
from imagecache.agent.http.peer_views import peer_grant
from imagecache.agent.settings import AgentSettings
from tests.agent.conftest import IMAGE_A, Agent, AgentFactory, random_payload
from tests.support.upstreams import FakeGlance, Faults

OPERATOR = "operator-token"
UPSTREAM = "upstream-secret"
SIZE = 3 * 2**20 + 123
PEER_READ = {"X-Image-Cache-Peer-Read": "1"}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeGlance]:
    server = FakeGlance(token=UPSTREAM)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, Path]:
    operator, upstream = tmp_path / "tokens", tmp_path / "upstream-token"
    operator.write_text(f"{OPERATOR}\n")
    upstream.write_text(f"{UPSTREAM}\n")
    return {"token_file": operator, "upstream_token_file": upstream}


async def start_agent(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path], **settings: Any
) -> Agent:
    values: dict[str, Any] = {"peer_networks": "127.0.0.0/8", **tokens, **settings}
    return await make_agent(upstream=upstream.upstream, **values)


def peer_url(agent: Agent) -> str:
    return f"http://127.0.0.1:{agent.client.port}"


async def put_from(agent: Agent, source: str, token: str = OPERATOR) -> int:
    headers = {"X-Auth-Token": token, "X-Image-Cache-Source": source}
    async with agent.client.put(f"/v2/cache/{IMAGE_A}", headers=headers) as response:
        return response.status


async def report(agent: Agent) -> dict[str, Any]:
    headers = {"X-Auth-Token": OPERATOR}
    async with agent.client.get(f"/v2/cache/{IMAGE_A}", headers=headers) as response:
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data


async def until(
    agent: Agent, predicate: Callable[[dict[str, Any]], bool], within: float = 20.0
) -> dict[str, Any]:
    """The image's report once `predicate` holds (polled, bounded by `within` seconds)."""
    async with asyncio.timeout(within):
        while True:
            doc = await report(agent)
            if predicate(doc):
                return doc
            await asyncio.sleep(0.01)


async def until_settled(agent: Agent) -> dict[str, Any]:
    return await until(agent, lambda doc: doc["state"] in ("cached", "failed"))


async def metric(agent: Agent, name: str) -> float:
    async with agent.client.get("/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def test_a_peer_agent_serves_the_bytes_and_the_upstream_is_read_once(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path]
) -> None:
    data = random_payload(SIZE, "peer")
    upstream.add(IMAGE_A, data)
    seed = await start_agent(make_agent, upstream, tokens)
    assert await seed.client.put(f"/v2/cache/{IMAGE_A}", headers={"X-Auth-Token": OPERATOR})
    assert (await until_settled(seed))["state"] == "cached"

    target = await start_agent(make_agent, upstream, tokens)
    assert await put_from(target, peer_url(seed)) == 202
    done = await until_settled(target)

    assert done["state"] == "cached", done
    assert done["source"] == peer_url(seed)
    assert done["peer_fallback"] is None
    assert target.cache.store.image_path(IMAGE_A).read_bytes() == data
    assert upstream.count("GET", IMAGE_A) == 1  # the seed's read only
    assert await metric(target, "imagecache_peer_downloaded_bytes_total") == SIZE
    assert await metric(target, "imagecache_downloaded_bytes_total") == 0


def _evict_mid_transfer(peer: FakeGlance) -> None:
    """The peer sends half the image, then drops it (and the connection)."""
    peer.faults[IMAGE_A] = Faults(drop_after=SIZE // 2)
    serve = peer._serve_bytes

    async def evicting(request: web.Request, image: Any) -> web.StreamResponse:
        try:
            return await serve(request, image)
        finally:
            peer.images.pop(IMAGE_A, None)

    peer._serve_bytes = evicting  # type: ignore[method-assign]


FAILING_PEERS = [
    pytest.param(
        lambda peer: peer.faults.update({IMAGE_A: Faults(corrupt=True)}),
        "verification",
        id="wrong-bytes-right-length",
    ),
    pytest.param(
        lambda peer: peer.faults.update({IMAGE_A: Faults(drop_after=SIZE // 2)}),
        "connection",
        id="dies-mid-transfer",
    ),
    pytest.param(_evict_mid_transfer, "connection", id="evicts-mid-transfer"),
    pytest.param(
        lambda peer: peer.faults.update({IMAGE_A: Faults(stall_after=SIZE // 3)}),
        "stall",
        id="stalls",
    ),
    pytest.param(
        lambda peer: peer.faults.update({IMAGE_A: Faults(fail_times=1, fail_status=429)}),
        "busy",
        id="answers-429",
    ),
    pytest.param(lambda peer: peer.images.clear(), "not_found", id="does-not-hold-it"),
    pytest.param(lambda peer: setattr(peer, "token", "another"), "unauthorized", id="401"),
]


@pytest.mark.parametrize(("breaks", "reason"), FAILING_PEERS)
async def test_a_failing_peer_falls_back_to_the_upstream_from_byte_0(
    make_agent: AgentFactory,
    upstream: FakeGlance,
    tokens: dict[str, Path],
    breaks: Any,
    reason: str,
) -> None:
    data = random_payload(SIZE, "fallback")
    upstream.add(IMAGE_A, data)
    async with _peer(data) as peer:
        breaks(peer)
        target = await start_agent(make_agent, upstream, tokens, stall_timeout=0.5)
        assert await put_from(target, peer.url) == 202
        done = await until_settled(target)

        assert done["state"] == "cached", done
        assert done["source"] == "upstream"
        assert f"({reason}:" in done["peer_fallback"], done["peer_fallback"]
        assert peer.url in done["peer_fallback"]
        assert target.cache.store.image_path(IMAGE_A).read_bytes() == data
        file_requests = [s for s in upstream.requests if s.path.endswith("/file")]
        assert [s.range for s in file_requests] == [None]  # one read, from byte 0
        assert peer.requests, "the peer was asked"
        assert {s.token for s in peer.requests} == {OPERATOR}  # never the upstream's token
        assert await metric(target, f'imagecache_peer_fallbacks_total{{reason="{reason}"}}') == 1


def _peer(data: bytes) -> Any:
    """A recording listener standing for a peer agent (FakeGlance serves the same path)."""

    class Peer(FakeGlance):
        async def __aenter__(self) -> Peer:
            await self.start()
            self.add(IMAGE_A, data)
            return self

    return Peer(token=OPERATOR)


async def test_an_upstream_without_digests_makes_the_hint_ignored(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path]
) -> None:
    data = random_payload(SIZE, "nodigest")
    upstream.add(IMAGE_A, data, checksum=None, os_hash_value=None, os_hash_algo=None)
    async with _peer(data) as peer:
        target = await start_agent(make_agent, upstream, tokens)
        assert await put_from(target, peer.url) == 202
        done = await until_settled(target)

        assert done["state"] == "cached"
        assert done["source"] == "upstream"
        assert "no digest" in done["peer_fallback"]
        assert peer.requests == []  # an unverifiable peer is never even asked
        assert await metric(target, 'imagecache_peer_fallbacks_total{reason="no_digest"}') == 1


async def test_the_hint_survives_a_restart_and_the_credential_does_not(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path], tmp_path: Path
) -> None:
    data = random_payload(SIZE, "restart")
    upstream.add(IMAGE_A, data)
    cache_dir = tmp_path / "restarting"
    async with _peer(data) as peer:
        peer.faults[IMAGE_A] = Faults(stall_after=SIZE // 2)  # holds the download mid-way
        first = await start_agent(
            make_agent, upstream, tokens, cache_dir=cache_dir, stall_timeout=30.0
        )
        assert await put_from(first, peer.url) == 202
        assert (await until(first, lambda r: r["bytes"] > 0))["source"] == peer.url
        await first.client.close()  # the agent stops with the peer download in flight

        on_disk = b"".join(p.read_bytes() for p in cache_dir.rglob("*") if p.is_file())
        assert OPERATOR.encode() not in on_disk

        peer.release_stalls()
        second = await start_agent(make_agent, upstream, tokens, cache_dir=cache_dir)
        done = await until_settled(second)
        assert done["state"] == "cached"
        assert "credential" in done["peer_fallback"]
        assert second.cache.store.image_path(IMAGE_A).read_bytes() == data
        assert len(peer.requests) == 1  # the restarted agent never went back to the peer
        file_requests = [s for s in upstream.requests if s.path.endswith("/file")]
        assert [s.range for s in file_requests] == [None]  # peer bytes are never resumed


@pytest.mark.parametrize(
    ("networks", "hint", "status"),
    [
        pytest.param("", "http://127.0.0.9:9292", 400, id="no-peer-networks"),
        pytest.param("10.0.0.0/8", "http://127.0.0.9:9292", 400, id="outside-peer-networks"),
        pytest.param("127.0.0.0/8", "http://127.0.0.9:9292/elsewhere", 400, id="with-a-path"),
        pytest.param("127.0.0.0/8", "http://localhost:9292", 400, id="a-host-name"),
        pytest.param("127.0.0.0/8", "http://u:p@127.0.0.9:9292", 400, id="user-info"),
        pytest.param("127.0.0.0/8", "ftp://127.0.0.9", 400, id="not-http"),
    ],
)
async def test_a_hint_outside_the_rule_is_refused_and_queues_nothing(
    make_agent: AgentFactory,
    upstream: FakeGlance,
    tokens: dict[str, Path],
    networks: str,
    hint: str,
    status: int,
) -> None:
    upstream.add(IMAGE_A, b"x" * 1000)
    agent = await start_agent(make_agent, upstream, tokens, peer_networks=networks)
    assert await put_from(agent, hint) == status
    assert (await report(agent))["state"] == "absent"


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [("token", True), ("anonymous", True), ("kubernetes", True), ("keystone", False)],
)
async def test_only_the_operators_credential_may_name_a_peer(
    tmp_path: Path, principal: Principal, allowed: bool
) -> None:
    settings = AgentSettings(upstream=f"file://{tmp_path}", peer_networks="127.0.0.0/8")

    @web.middleware
    async def as_principal(request: web.Request, handler: Any) -> web.StreamResponse:
        request[PRINCIPAL] = principal
        return await handler(request)

    async def view(request: web.Request) -> web.Response:
        grant = peer_grant(request)
        assert grant is not None
        return web.json_response({"url": grant.url, "credential": grant.credential})

    app = web.Application(middlewares=[errors_middleware, as_principal])
    app[SETTINGS] = settings
    app.router.add_put("/", view)
    async with TestClient(TestServer(app)) as client:
        headers = {"X-Image-Cache-Source": "http://127.0.0.7:9292/", "X-Auth-Token": "t"}
        async with client.put("/", headers=headers) as response:
            if allowed:
                assert response.status == 200
                assert await response.json() == {
                    "url": "http://127.0.0.7:9292",
                    "credential": {"X-Auth-Token": "t"},
                }
            else:
                assert response.status == 403


async def test_a_peer_read_is_served_only_from_the_cache(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path]
) -> None:
    upstream.add(IMAGE_A, random_payload(1000, "miss"))
    agent = await start_agent(make_agent, upstream, tokens)
    headers = {"X-Auth-Token": OPERATOR, **PEER_READ}
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file", headers=headers) as response:
        assert response.status == 404
    assert upstream.requests == []  # never read through
    assert (await report(agent))["state"] == "absent"  # never queued


async def test_peer_reads_are_bounded_and_pinned_while_sent(
    make_agent: AgentFactory, upstream: FakeGlance, tokens: dict[str, Path]
) -> None:
    data = random_payload(48 * 2**20, "bounded")
    upstream.add(IMAGE_A, data)
    agent = await start_agent(make_agent, upstream, tokens, peer_serve_limit=1)
    await agent.client.put(f"/v2/cache/{IMAGE_A}", headers={"X-Auth-Token": OPERATOR})
    assert (await until_settled(agent))["state"] == "cached"
    url = f"{peer_url(agent)}/v2/images/{IMAGE_A}/file"
    headers = {"X-Auth-Token": OPERATOR, **PEER_READ}

    async with ClientSession() as session:
        first = await session.get(url, headers=headers)  # headers read, body left unread
        assert first.status == 200
        async with session.get(url, headers=headers) as busy:
            assert busy.status == 429
            assert busy.headers["Retry-After"] == "1"
        assert await metric(agent, "imagecache_peer_transfers") == 1
        # Deleting the image while it is sent does not cut the transfer (it is pinned).
        delete = await agent.client.delete(
            f"/v2/cache/{IMAGE_A}", headers={"X-Auth-Token": OPERATOR}
        )
        assert delete.status == 204
        body = await first.read()
        first.release()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    async with asyncio.timeout(10):
        while True:
            if await metric(agent, "imagecache_peer_transfers") == 0:
                break
            await asyncio.sleep(0.01)
    assert await metric(agent, "imagecache_peer_reads_refused_total") == 1


class _Judge:
    """An `InboundAuth` with a fixed verdict for every token (counts what it was asked)."""

    def __init__(self, verdict: str) -> None:
        self.verdict, self.asked = verdict, 0

    def known(self, token: str) -> Any:
        return None

    async def check(self, token: str) -> Any:
        self.asked += 1
        return self.verdict


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        pytest.param("GET", f"/v2/images/{IMAGE_A}/file", PEER_READ, 200, id="peer-read"),
        pytest.param("HEAD", f"/v2/images/{IMAGE_A}/file", PEER_READ, 200, id="peer-head"),
        pytest.param("GET", f"/v2/images/{IMAGE_A}/file", {}, 401, id="plain-read"),
        pytest.param("PUT", f"/v2/cache/{IMAGE_A}", PEER_READ, 401, id="queue"),
        pytest.param("GET", "/v2/cache", PEER_READ, 401, id="listing"),
        pytest.param("GET", f"/v2/images/{IMAGE_A}", PEER_READ, 401, id="metadata"),
    ],
)
async def test_a_peer_read_token_opens_peer_reads_only(
    method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """``auth kubernetes``: a token reviewed for this pod's *peer* audience (not its own)."""
    own, peer = _Judge("invalid"), _Judge("allowed")

    async def view(request: web.Request) -> web.Response:
        return web.Response(text=request[PRINCIPAL])

    app = web.Application(middlewares=[errors_middleware, auth_middleware(None, own, peer)])
    app.router.add_route("*", "/{tail:.*}", view)
    async with TestClient(TestServer(app)) as client:
        sent = {"X-Auth-Token": "peer-token", **headers}
        async with client.request(method, path, headers=sent) as response:
            assert response.status == status
            if status == 200 and method == "GET":
                assert await response.text() == "peer"
    assert own.asked == 1
    assert peer.asked == (1 if status == 200 else 0)
