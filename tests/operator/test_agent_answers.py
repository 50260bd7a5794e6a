"""The operator's agent client reads answers as untrusted input (issue 14, item 5; SPEC §4.5).

`HttpAgents.cache_report` over real loopback HTTP against listeners that answer badly: a body
longer than `core.wire.LISTING_LIMIT` (declared, or streamed without a length), ``NaN`` in the
JSON, a body that is not JSON. Each is that agent's `AgentProtocolError`, read no further than
the limit; a good listing still parses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from imagecache.controller.agents import HttpAgents
from imagecache.controller.credentials import TokenFile, TokenFileCredentials
from imagecache.controller.errors import AgentProtocolError
from imagecache.controller.metrics import OperatorMetrics
from imagecache.core.wire import LISTING_LIMIT
from tests.operator.harness import ListingHandler, ListingServer


async def _streamed_past_the_limit(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"cached_images": [], "padding": "')
    block = b"x" * 2**20
    sent = 0
    try:
        while sent <= LISTING_LIMIT + 2**20:
            await response.write(block)
            sent += len(block)
    except (ConnectionResetError, ConnectionError):
        pass  # the client stopped reading: what the test wants
    return response


async def _declared_past_the_limit(_: web.Request) -> web.Response:
    return web.Response(body=b" " * (LISTING_LIMIT + 1), content_type="application/json")


async def _nan(_: web.Request) -> web.Response:
    return web.Response(text='{"cached_images": [], "x": NaN}', content_type="application/json")


async def _not_json(_: web.Request) -> web.Response:
    return web.Response(text="<html>proxy error</html>", content_type="text/html")


async def _good(_: web.Request) -> web.Response:
    return web.json_response({"cached_images": [{"image_id": "a", "size": 1}]})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[ListingHandler], Awaitable[str]]]:
    async with contextlib.AsyncExitStack() as servers:

        async def start(handler: ListingHandler) -> str:
            return (await servers.enter_async_context(ListingServer(handler))).url

        yield start


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[HttpAgents]:
    token = tmp_path / "token"
    token.write_text("t")
    credentials = TokenFileCredentials(TokenFile(token))
    client = HttpAgents(
        credentials=credentials, timeout=30.0, max_concurrency=4, metrics=OperatorMetrics()
    )
    async with client:
        yield client


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        pytest.param(_streamed_past_the_limit, "longer than", id="streamed"),
        pytest.param(_declared_past_the_limit, "bytes \\(at most", id="declared"),
        pytest.param(_nan, "NaN is not JSON", id="nan"),
        pytest.param(_not_json, "not JSON", id="html"),
    ],
)
async def test_a_bad_listing_is_that_agent_s_protocol_error(
    serve: Callable[[ListingHandler], Awaitable[str]],
    agents: HttpAgents,
    handler: ListingHandler,
    problem: str,
) -> None:
    endpoint = await serve(handler)
    with pytest.raises(AgentProtocolError, match=problem) as raised:
        await agents.cache_report(endpoint)
    assert raised.value.endpoint == endpoint


async def test_a_good_listing_is_read(
    serve: Callable[[ListingHandler], Awaitable[str]], agents: HttpAgents
) -> None:
    listing = await agents.cache_report(await serve(_good))
    assert [entry["image_id"] for entry in listing["cached_images"]] == ["a"]
