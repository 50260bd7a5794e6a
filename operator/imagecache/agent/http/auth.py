"""Client tokens (SPEC §2.4): accepted tokens from `token_file` (read by token_file.TokenFile,
re-read when the file changes), compared in constant time; `InboundAuth`, what the middleware
asks about any other token (Keystone, or a Kubernetes TokenReview)."""

from __future__ import annotations

import hmac
from typing import Protocol

from aiohttp import web

from imagecache.agent.keystone import Outcome
from imagecache.agent.token_file import TokenFile


class InboundAuth(Protocol):
    """A judge of client tokens: `keystone.Keystone` or `token_review.TokenReviews`."""

    def known(self, token: str) -> Outcome | None:
        """The verdict already known for `token` (cached, or an implausible token), at once."""
        ...

    async def check(self, token: str) -> Outcome:
        """``allowed``, ``invalid`` or ``forbidden``; raises when it cannot be asked."""
        ...


class AcceptedTokens:
    """The client tokens of `token_file` (re-read when it changes, off the event loop)."""

    def __init__(self, source: TokenFile) -> None:
        self.source = source

    async def accepts(self, presented: str | None) -> bool:
        if not presented:
            return False
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for token in await self.source.tokens():  # compare against every token: no early exit
            matched |= hmac.compare_digest(candidate, token.encode("utf-8", "surrogateescape"))
        return matched


def presented_token(request: web.Request) -> str | None:
    """The token a client sent: ``X-Auth-Token`` or ``Authorization: Bearer``."""
    token = request.headers.get("X-Auth-Token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
