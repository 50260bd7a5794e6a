"""The operator's port to the cache agents, and its aiohttp implementation.

`AgentPort` is the narrow interface the reconciler uses: queue an image (``PUT``), evict it
(``DELETE``), read the agent's report (``GET /v2/cache``). `HttpAgents` implements it with one
shared aiohttp session: at most ``max_concurrency`` requests in flight, ``request_timeout`` per
request, the token from ``agent_token_file`` (re-read whenever the file changes), and each
request counted in the metrics by outcome. Every listing is checked against the wire contract
(`core.wire.parse_listing`) before the reconciler sees it: a malformed one is that agent's
`AgentProtocolError`, never the loop's exception.

Two small places on purpose: `auth_headers` builds the credential sent to one target, and
`put_image` is the one path that sends a ``PUT``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from imagecache.controller.errors import (
    AgentError,
    AgentProtocolError,
    AgentUnauthorized,
    AgentUnreachable,
)
from imagecache.controller.metrics import OperatorMetrics
from imagecache.core.wire import CacheListing, WireError, parse_listing


class AgentPort(Protocol):
    """What the reconciler needs from an agent at ``endpoint`` (``http://ip:port``)."""

    async def put_image(self, endpoint: str, image: str) -> int:
        """``PUT /v2/cache/{image}``: 202, 404 or 400; raises AgentUnreachable/Unauthorized."""
        ...

    async def delete_image(self, endpoint: str, image: str) -> int:
        """``DELETE /v2/cache/{image}``: 204 or 404; raises AgentUnreachable/Unauthorized."""
        ...

    async def cache_report(self, endpoint: str) -> CacheListing:
        """``GET /v2/cache``; raises AgentUnreachable/Unauthorized/AgentProtocolError."""
        ...


class TokenFile:
    """A token read from a file, re-read when the file's mtime, size or inode changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def current(self) -> str | None:
        """The first non-empty line of the file (None without a file or when it is missing)."""
        if self._path is None:
            return None
        try:
            info = os.stat(self._path)
        except OSError:
            self._stamp, self._token = None, None
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._stamp:
            text = self._path.read_text(encoding="utf-8", errors="replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            self._token = lines[0] if lines else None
            self._stamp = stamp
        return self._token


class HttpAgents:
    """`AgentPort` over HTTP. Use as an async context manager (it owns the session)."""

    def __init__(
        self, *, token: TokenFile, timeout: float, max_concurrency: int, metrics: OperatorMetrics
    ) -> None:
        self._token = token
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

    def auth_headers(self, endpoint: str) -> dict[str, str]:
        """The credential headers sent to the agent at `endpoint` (none without a token)."""
        token = self._token.current()
        return {"X-Auth-Token": token} if token else {}

    async def put_image(self, endpoint: str, image: str) -> int:
        """The one place a ``PUT`` is sent to an agent."""
        status, _ = await self._call(
            "PUT", endpoint, f"/v2/cache/{image}", accept=(202, 404, 400), headers={}
        )
        return status

    async def delete_image(self, endpoint: str, image: str) -> int:
        status, _ = await self._call("DELETE", endpoint, f"/v2/cache/{image}", accept=(204, 404))
        return status

    async def cache_report(self, endpoint: str) -> CacheListing:
        _, body = await self._call("GET", endpoint, "/v2/cache", accept=(200,), want_json=True)
        try:
            return parse_listing(body)
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
        want_json: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        assert self._session is not None, "HttpAgents used outside its context"
        headers = dict(headers or {})
        if method == "PUT":
            headers["Content-Length"] = "0"
        headers.update(self.auth_headers(endpoint))
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
                body = await response.json(content_type=None) if want_json else None
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
