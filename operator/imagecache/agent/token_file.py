"""The agent's one token-file reader: `TokenFile`, for the accepted client tokens (`token_file`,
auth.py) and for the token sent to an HTTP or Glance upstream (`upstream_token_file`,
upstream_auth.py).

A token file holds one token per line; blank lines and lines starting with ``#`` are ignored.
It is re-read when its mtime, size or inode changes (a Kubernetes Secret volume swaps a symlink,
which changes the inode), so a rotated token is used without a restart. The ``stat`` and the read
run in a worker thread, never on the event loop; callers that arrive while a check is running
share it, so a burst of requests costs one thread hop, not one each. A missing or unreadable
file holds no tokens (callers decide what that means: no client is accepted, no upstream token
is sent).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

Stamp = tuple[int, int, int]


class TokenFile:
    """The tokens of one file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Stamp | None = None
        self._tokens: tuple[str, ...] = ()
        self._check: asyncio.Future[tuple[str, ...]] | None = None

    async def tokens(self) -> tuple[str, ...]:
        """Every token of the file now (empty when it is missing or unreadable)."""
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(asyncio.to_thread(self._refresh))
        return await asyncio.shield(self._check)

    async def first(self) -> str | None:
        """The first token of the file, or None."""
        tokens = await self.tokens()
        return tokens[0] if tokens else None

    def _refresh(self) -> tuple[str, ...]:
        """Runs in a worker thread: stat, and read again only when the file changed."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp:
                text = self.path.read_text(encoding="utf-8", errors="replace")
                self._tokens, self._stamp = parse_tokens(text), stamp
        except OSError:
            self._tokens, self._stamp = (), None
        return self._tokens


def parse_tokens(text: str) -> tuple[str, ...]:
    """The tokens of a token file's text: stripped lines, minus blanks and ``#`` comments."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
