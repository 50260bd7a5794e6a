"""Client tokens (SPEC §2.4): accepted tokens from `token_file`, re-read when the file changes,
compared in constant time."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from aiohttp import web


class TokenFile:
    """The set of accepted tokens, one per line of a file (blank lines and ``#`` ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._tokens: list[bytes] = []

    def tokens(self) -> list[bytes]:
        try:
            stat = os.stat(self.path)
        except OSError:
            self._key, self._tokens = None, []
            return []
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != self._key:
            lines = self.path.read_text(errors="replace").splitlines()
            self._tokens = [
                line.strip().encode()
                for line in lines
                if line.strip() and not line.lstrip().startswith("#")
            ]
            self._key = key
        return self._tokens

    def accepts(self, presented: str | None) -> bool:
        if not presented:
            return False
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for token in self.tokens():  # compare against every token: no early exit
            matched |= hmac.compare_digest(candidate, token)
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
