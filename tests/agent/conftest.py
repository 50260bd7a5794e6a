"""Fixtures for the agent suites: in-process agents (`create_app` on a loopback test server)
over real upstreams (a directory, `HttpFileServer`, `FakeGlance` from tests/support/upstreams).

Covers nothing by itself; see the test modules.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imagecache.agent.cache.facade import ImageCache
from imagecache.agent.http.app import create_app
from imagecache.agent.http.appkeys import CACHE
from imagecache.agent.settings import AgentSettings
from imagecache.agent.upstream.port import Upstream
from tests.support.upstreams import FakeGlance, HttpFileServer

IMAGE_A = "2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5e"
IMAGE_B = "7d0b6f5c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
IMAGE_C = "0b9f2a5e-3c1d-4e2f-8a7b-6c5d4e3f2a1b"


def random_payload(size: int, seed: str) -> bytes:
    """Deterministic random-looking bytes with no period, so a wrong offset is always detected."""
    return random.Random(seed).randbytes(size)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-enough bytes."""
    block = bytes((i * 31 + seed * 17) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Agent:
    """An in-process agent and its HTTP client."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    cache_dir: Path

    @property
    def cache(self) -> ImageCache:
        return self.app[CACHE]

    async def report(self, image_id: str) -> dict[str, Any]:
        async with self.client.get(f"/v2/cache/{image_id}") as response:
            assert response.status == 200, await response.text()
            data: dict[str, Any] = await response.json()
            return data

    async def listing(self) -> dict[str, Any]:
        async with self.client.get("/v2/cache") as response:
            assert response.status == 200
            data: dict[str, Any] = await response.json()
            return data

    async def put(self, image_id: str) -> int:
        async with self.client.put(f"/v2/cache/{image_id}") as response:
            return response.status

    async def wait_for(self, image_id: str, *states: str, within: float = 15.0) -> dict[str, Any]:
        """Poll the report until the image reaches one of `states` (bounded)."""
        return await self.wait_report(image_id, lambda r: r["state"] in states, within=within)

    async def wait_report(
        self, image_id: str, predicate: Callable[[dict[str, Any]], bool], within: float = 15.0
    ) -> dict[str, Any]:
        """Poll the report until `predicate` holds (bounded by `within` seconds)."""
        deadline = time.monotonic() + within
        report = await self.report(image_id)
        while not predicate(report):
            if time.monotonic() > deadline:
                raise AssertionError(f"{image_id} stuck in {report}")
            await asyncio.sleep(0.01)
            report = await self.report(image_id)
        return report


AgentFactory = Callable[..., Awaitable[Agent]]


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `predicate` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "upstream"
    directory.mkdir()
    return directory


@pytest.fixture
async def make_agent(tmp_path: Path, upstream_dir: Path) -> AsyncIterator[AgentFactory]:
    """`await make_agent(upstream=..., **settings)` → a running in-process `Agent`.

    ``source=`` hands the agent an `Upstream` object instead of the one ``upstream`` names.
    """
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(
        upstream: str | None = None, source: Upstream | None = None, **overrides: Any
    ) -> Agent:
        values: dict[str, Any] = {
            "upstream": upstream or f"file://{upstream_dir}",
            "cache_dir": tmp_path / f"cache{len(clients)}",
            "retry_backoff": 0.01,
            "stall_timeout": 2.0,
            "drain_timeout": 0.0,  # teardown does not wait for downloads (tests that do: own)
        }
        values.update(overrides)
        settings = AgentSettings(**values)
        app = create_app(settings, upstream=source)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Agent(client=client, app=app, cache_dir=settings.cache_dir)

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def http_upstream() -> AsyncIterator[HttpFileServer]:
    server = HttpFileServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def glance_upstream() -> AsyncIterator[FakeGlance]:
    server = FakeGlance(token="upstream-secret")
    await server.start()
    yield server
    await server.close()
