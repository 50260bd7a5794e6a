"""The operator's port to the cache agents, and its aiohttp implementation.

`AgentPort` is the narrow interface the reconciler uses: queue an image (``PUT``), evict it
(``DELETE``), read the agent's report (``GET /v2/cache``). `HttpAgents` implements it with one
shared aiohttp session: at most ``max_concurrency`` requests in flight, ``request_timeout`` per
request, the credential headers for each target from an `AgentCredentials` (controller/
credentials.py: the shared token file, or a per-pod token), and each request counted in the
metrics by outcome. Callers pass the target's ``pod_uid``: a per-pod credential needs it.
Every listing is read up to `core.wire.LISTING_LIMIT` bytes and checked against the wire
contract (`core.wire.load_listing`) before the reconciler sees it: a malformed or oversized one
is that agent's `AgentProtocolError`, never the loop's exception.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import aiohttp

from imagecache.controller.credentials import AgentCredentials
from imagecache.controller.credentials import TokenFile as TokenFile
from imagecache.controller.errors import (
    AgentError,
    AgentProtocolError,
    AgentUnauthorized,
    AgentUnreachable,
)
from imagecache.controller.metrics import OperatorMetrics
from imagecache.core.wire import (
    LISTING_LIMIT,
    SOURCE_HEADER,
    SOURCE_TOKEN_HEADER,
    CacheListing,
    WireError,
    load_listing,
)
from imagecache.http_bodies import read_bounded


class AgentPort(Protocol):
    """What the reconciler needs from an agent at ``endpoint`` (``http://ip:port``)."""

    async def put_image(
        self,
        endpoint: str,
        image: str,
        *,
        pod_uid: str | None = None,
        source: str | None = None,
        source_pod_uid: str | None = None,
    ) -> int:
        """``PUT /v2/cache/{image}``: 202, 404 or 400; raises AgentUnreachable/Unauthorized.

        `source`: a peer agent's base URL the image is filled from (``X-Image-Cache-Source``,
        fleet fill), with the credential that lets the target read from that peer (the peer
        pod `source_pod_uid`'s peer-read token, or the shared token).
        """
        ...

    async def delete_image(self, endpoint: str, image: str, *, pod_uid: str | None = None) -> int:
        """``DELETE /v2/cache/{image}``: 204 or 404; raises AgentUnreachable/Unauthorized."""
        ...

    async def cache_report(self, endpoint: str, *, pod_uid: str | None = None) -> CacheListing:
        """``GET /v2/cache``; raises AgentUnreachable/Unauthorized/AgentProtocolError."""
        ...


class HttpAgents:
    """`AgentPort` over HTTP. Use as an async context manager (it owns the session)."""

    def __init__(
        self,
        *,
        credentials: AgentCredentials,
        timeout: float,
        max_concurrency: int,
        metrics: OperatorMetrics,
    ) -> None:
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpAgents:
        connector = aiohttp.TCPConnector(limit=self._max_concurrency, force_close=False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put_image(
        self,
        endpoint: str,
        image: str,
        *,
        pod_uid: str | None = None,
        source: str | None = None,
        source_pod_uid: str | None = None,
    ) -> int:
        extra = await self._source_headers(source, source_pod_uid)
        status, _ = await self._call(
            "PUT",
            endpoint,
            f"/v2/cache/{image}",
            accept=(202, 404, 400),
            pod_uid=pod_uid,
            extra=extra,
        )
        return status

    async def _source_headers(
        self, source: str | None, source_pod_uid: str | None
    ) -> dict[str, str]:
        """The peer to name and the token that lets the target read from it (fleet fill)."""
        if source is None:
            return {}
        peer = await self._credentials.peer_headers_for(endpoint=source, pod_uid=source_pod_uid)
        token = peer.get("X-Auth-Token")
        return {SOURCE_HEADER: source, **({SOURCE_TOKEN_HEADER: token} if token else {})}

    async def delete_image(self, endpoint: str, image: str, *, pod_uid: str | None = None) -> int:
        status, _ = await self._call(
            "DELETE", endpoint, f"/v2/cache/{image}", accept=(204, 404), pod_uid=pod_uid
        )
        return status

    async def cache_report(self, endpoint: str, *, pod_uid: str | None = None) -> CacheListing:
        _, body = await self._call(
            "GET", endpoint, "/v2/cache", accept=(200,), read_limit=LISTING_LIMIT, pod_uid=pod_uid
        )
        try:
            return load_listing(body)
        except WireError as error:
            raise AgentProtocolError(
                f"GET /v2/cache: invalid listing: {error}", endpoint=endpoint
            ) from error

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: str,
        *,
        accept: tuple[int, ...],
        read_limit: int = 0,
        pod_uid: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; its status and (up to `read_limit` bytes of) body."""
        assert self._session is not None, "HttpAgents used outside its context"
        headers = {"Content-Length": "0"} if method == "PUT" else {}
        headers.update(extra or {})
        headers.update(await self._credentials.headers_for(endpoint=endpoint, pod_uid=pod_uid))
        started = time.monotonic()
        outcome = "error"
        try:
            async with (
                self._limit,
                self._session.request(method, endpoint + path, headers=headers) as response,
            ):
                outcome = str(response.status)
                if response.status in (401, 403):
                    raise AgentUnauthorized(
                        f"{method} {path}: {response.status}",
                        endpoint=endpoint,
                        status=response.status,
                    )
                if response.status not in accept:
                    raise AgentUnreachable(
                        f"{method} {path}: unexpected {response.status}",
                        endpoint=endpoint,
                        status=response.status,
                    )
                body = await read_bounded(response, read_limit) if read_limit else b""
                return response.status, body
        except AgentError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            outcome = "unreachable" if not isinstance(error, TimeoutError) else "timeout"
            raise AgentUnreachable(
                f"{method} {path}: {type(error).__name__}: {error}", endpoint=endpoint
            ) from error
        except ValueError as error:
            outcome = "invalid"
            raise AgentProtocolError(f"{method} {path}: {error}", endpoint=endpoint) from error
        finally:
            self._metrics.observe_agent_request(
                method=method, outcome=outcome, seconds=time.monotonic() - started
            )
