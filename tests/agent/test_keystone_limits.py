"""Keystone never stalls the agent (issue 16, item 7; SPEC §2.10), against `FakeKeystone`.

Covers, with an in-process agent in keystone mode whose cloud authenticates at a loopback fake
Keystone that can hang validations:
- with every validation thread stuck on a hung Keystone, ``/healthz``, the operator's
  token-file token and a download (the agent's own authentication to a Glance upstream) are
  not held up;
- a hung validation ends with 503 after ``keystone_timeout``, not never;
- a token longer than Keystone's tokens is 401 without asking Keystone; a token Keystone
  refuses as malformed (400) is 401, not 503; a refused token is asked about once, then its
  verdict is cached;
- load is shed per client: a client with too many validations in flight gets 429, a client on
  another address is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imagecache.agent.http.middlewares import MAX_VALIDATIONS_PER_CLIENT
from imagecache.agent.keystone import MAX_TOKEN_LENGTH, VALIDATION_THREADS
from tests.agent.conftest import IMAGE_A, Agent, AgentFactory, eventually, payload
from tests.support.keystone import FakeKeystone
from tests.support.upstreams import FakeGlance

# openstacksdk's clouds.yaml loader warns about its own InfluxDB defaults on every load.
pytestmark = pytest.mark.filterwarnings("ignore:Support for InfluxDB")

OPERATOR = "operator-token"
BOUND = 10.0  # seconds any one answer may take here


@pytest.fixture
async def keystone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKeystone]:
    fake = FakeKeystone()
    await fake.start()
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(fake.clouds_yaml(tmp_path / "clouds.yaml")))
    yield fake
    await fake.close()


async def keystone_agent(
    make_agent: AgentFactory, tmp_path: Path, glance: FakeGlance, **overrides: Any
) -> Agent:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{OPERATOR}\n")
    return await make_agent(
        glance.upstream,
        auth="keystone",
        os_cloud="fake",
        token_file=tokens,
        **overrides,
    )


async def status_of(agent: Agent, path: str, token: str | None, method: str = "GET") -> int:
    headers = {"X-Auth-Token": token} if token else {}
    async with asyncio.timeout(BOUND):
        async with agent.client.request(method, path, headers=headers) as response:
            return response.status


async def test_hung_validations_hold_up_nothing_that_needs_none(
    make_agent: AgentFactory, tmp_path: Path, glance_upstream: FakeGlance, keystone: FakeKeystone
) -> None:
    glance_upstream.add(IMAGE_A, payload(4096))
    agent = await keystone_agent(make_agent, tmp_path, glance_upstream, keystone_timeout=60.0)
    hung = [
        asyncio.ensure_future(status_of(agent, "/v2/cache", f"hang-{n}"))
        for n in range(VALIDATION_THREADS + 2)
    ]
    try:
        await eventually(lambda: keystone.waiting() >= VALIDATION_THREADS)
        assert await status_of(agent, "/healthz", None) == 200
        assert await status_of(agent, "/v2/cache", OPERATOR) == 200
        # The PUT asks the upstream, with the agent's own Keystone token: its own threads.
        assert await status_of(agent, f"/v2/cache/{IMAGE_A}", OPERATOR, "PUT") == 202
        await eventually(lambda: agent.cache.report(IMAGE_A)["state"] == "cached", BOUND)
        assert not any(task.done() for task in hung)
    finally:
        keystone.release()
        await asyncio.gather(*hung, return_exceptions=True)


async def test_a_hung_validation_ends_after_keystone_timeout(
    make_agent: AgentFactory, tmp_path: Path, glance_upstream: FakeGlance, keystone: FakeKeystone
) -> None:
    agent = await keystone_agent(make_agent, tmp_path, glance_upstream, keystone_timeout=0.5)
    assert await status_of(agent, "/v2/cache", "hang-once") == 503


async def test_tokens_keystone_refuses_are_401(
    make_agent: AgentFactory, tmp_path: Path, glance_upstream: FakeGlance, keystone: FakeKeystone
) -> None:
    agent = await keystone_agent(make_agent, tmp_path, glance_upstream)
    oversized = "good-" + "x" * MAX_TOKEN_LENGTH
    assert await status_of(agent, "/v2/cache", oversized) == 401
    assert keystone.validations[oversized] == 0  # never asked
    assert await status_of(agent, "/v2/cache", "malformed-token") == 401
    for _ in range(3):
        assert await status_of(agent, "/v2/cache", "unknown-token") == 401
    assert keystone.validations["unknown-token"] == 1  # the refusal is remembered
    assert await status_of(agent, "/v2/cache", "good-admin") == 200


async def test_load_is_shed_per_client(
    make_agent: AgentFactory, tmp_path: Path, glance_upstream: FakeGlance, keystone: FakeKeystone
) -> None:
    agent = await keystone_agent(make_agent, tmp_path, glance_upstream, keystone_timeout=60.0)
    flood = [
        asyncio.ensure_future(status_of(agent, "/v2/cache", f"hang-flood-{n}"))
        for n in range(MAX_VALIDATIONS_PER_CLIENT)
    ]
    try:
        await eventually(lambda: keystone.waiting() >= VALIDATION_THREADS)
        await eventually(lambda: sum(keystone.validations.values()) >= VALIDATION_THREADS)
        # Every slot of this client (127.0.0.1) is taken: one more is shed at once.
        assert await status_of(agent, "/v2/cache", "hang-one-more") == 429
        # Another client address is still served (its validation has a thread of its own
        # once one frees up; here: a token whose verdict Keystone gives at once).
        keystone.release()
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        url = agent.client.make_url("/v2/cache")
        async with aiohttp.ClientSession(connector=connector) as other:
            async with asyncio.timeout(BOUND):
                async with other.get(url, headers={"X-Auth-Token": "good-other"}) as response:
                    assert response.status == 200
    finally:
        keystone.release()
        await asyncio.gather(*flood, return_exceptions=True)
