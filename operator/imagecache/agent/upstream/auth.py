"""How the agent authenticates to an HTTP or Glance upstream: one small port, three answers.

`UpstreamAuth.headers()` gives the headers of the next request; `refused()` is called when the
upstream answered 401, so the next `headers()` may bring a fresh credential (the request is then
tried once more). `endpoint()` is where the Glance API is, for ``upstream = glance://``.

- `NoAuth`: nothing (file-like HTTP servers).
- `StaticToken`: ``X-Auth-Token`` = the first token of ``upstream_token_file`` (token_file.py).
- `KeystoneAuth`: the agent's own Keystone token from its `keystone.Keystone` session,
  renewed by keystoneauth before it expires; a 401 invalidates it.
"""

from __future__ import annotations

from typing import Protocol

from imagecache.agent.keystone import Keystone, KeystoneError
from imagecache.agent.token_file import TokenFile
from imagecache.agent.upstream.port import TransientUpstreamError


class UpstreamAuth(Protocol):
    async def headers(self) -> dict[str, str]: ...

    async def refused(self) -> None: ...


class NoAuth:
    async def headers(self) -> dict[str, str]:
        return {}

    async def refused(self) -> None:
        return None


class StaticToken:
    """The first token of a token file (re-read when it changes); none sends nothing."""

    def __init__(self, source: TokenFile | None) -> None:
        self.source = source

    async def headers(self) -> dict[str, str]:
        token = await self.source.first() if self.source is not None else None
        return {"X-Auth-Token": token} if token else {}

    async def refused(self) -> None:
        return None  # the file is re-read on every request anyway


class KeystoneAuth:
    """The agent's Keystone token; Keystone being unreachable is a transient upstream error."""

    def __init__(self, keystone: Keystone) -> None:
        self.keystone = keystone

    async def headers(self) -> dict[str, str]:
        try:
            return await self.keystone.auth_headers()
        except KeystoneError as error:
            raise TransientUpstreamError(
                f"no token from Keystone: {error}", reason="auth_unavailable"
            ) from error

    async def refused(self) -> None:
        try:
            await self.keystone.invalidate()
        except KeystoneError as error:
            raise TransientUpstreamError(
                f"cannot renew the Keystone token: {error}", reason="auth_unavailable"
            ) from error

    async def endpoint(self) -> str:
        """The image endpoint of the service catalog (without a version suffix)."""
        try:
            return await self.keystone.image_endpoint()
        except KeystoneError as error:
            raise TransientUpstreamError(
                f"no image endpoint: {error}", reason="auth_unavailable"
            ) from error
