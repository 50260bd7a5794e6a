"""Read-through with ``cache_on_read``: one upstream stream feeds the cache and the client.

A `GET /v2/images/{id}/file` miss used to download the image twice: once streamed to the
client, once more by the queued download. Now (as Glance's cache does) the download reads the
upstream once and hands each chunk on to the client (`Tee`) while it writes and hashes it:

- the client gets chunk N once the download has taken it in (its bounds checked); the **last**
  chunk only after the whole image was verified and committed, so a client of an image whose
  bytes turn out wrong sees a failed transfer, never a complete wrong one;
- the cache commits only after full verification, as every download does;
- a client that disconnects, or takes no chunk for ``stall_timeout``, is left behind: the
  download goes on in the background (it has the upstream stream open already) and the image
  ends cached as if it had been queued;
- a download that fails before its first byte reaches the client (the upstream refused, no
  room at once) lets the client go: it streams from the upstream on its own (`Detached`), and
  the download carries on as a queued one would (retries, room waits);
- a download that fails after that ends the client's transfer (it sees it cut short) and is
  retried as any download.

Memory: at most two chunks wait for the client, plus the one held back until verification.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from imagecache.agent.upstream.port import (
    ByteStream,
    ChunkStream,
    ImageMeta,
    TransientUpstreamError,
    Upstream,
)

WAITING = 2  # chunks that may wait for the client


class Detached(Exception):
    """The download lets the client go before any byte: the client streams on its own."""


class Tee:
    """The hand-over of one download's chunks to one client, bounded both ways.

    Download side: `started`, `offer`, `finish`. Client side: `wait_started`, `chunks`,
    `leave`. Single event loop; no locks needed.
    """

    def __init__(self, *, client_timeout: float) -> None:
        self.client_timeout = client_timeout
        self._items: deque[bytes] = deque()
        self._changed = asyncio.Event()
        self._started = False
        self._detached = False
        self._done = False
        self._error: BaseException | None = None
        self.client_gone = False
        self.offered = 0

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self) -> None:
        """Until the next change, at most ``client_timeout`` (then `TimeoutError`)."""
        changed = self._changed
        async with asyncio.timeout(self.client_timeout):
            await changed.wait()

    # --- the download's side ---------------------------------------------------------------
    def started(self) -> None:
        """The upstream answered: bytes will follow."""
        self._started = True
        self._notify()

    def detach(self) -> None:
        """Before any byte was offered: the client streams from the upstream on its own."""
        if not self._started and not self.client_gone:
            self._detached = True
            self._notify()

    async def offer(self, chunk: bytes) -> None:
        """Queue `chunk` for the client; waits while `WAITING` chunks are not taken, at most
        ``client_timeout`` (then the client is left behind and the download goes on)."""
        while len(self._items) >= WAITING and not self.client_gone:
            try:
                await self._changes()
            except TimeoutError:
                self.leave()  # a client that does not read does not hold the download
        if not self.client_gone:
            self._items.append(chunk)
            self.offered += len(chunk)
            self._notify()

    def finish(self, error: BaseException | None = None, *, last: bytes | None = None) -> None:
        """The download ended: `last` is the held-back chunk (verified), or `error` why not."""
        if not self._started:
            self.detach()
        if error is None and last and not self.client_gone:
            self._items.append(last)
            self.offered += len(last)
        self._done, self._error = True, error
        self._notify()

    # --- the client's side -----------------------------------------------------------------
    async def wait_started(self) -> None:
        """Until the upstream answered; `Detached` when the client must stream on its own
        (also when nothing happened for ``client_timeout``)."""
        try:
            while not self._started:
                if self._detached:
                    raise Detached()
                await self._changes()
        except TimeoutError as error:
            self.leave()
            raise Detached() from error

    async def chunks(self) -> AsyncIterator[bytes]:
        """The image's bytes as the download takes them in; `TransientUpstreamError` when the
        download failed or took longer than ``client_timeout`` to give the next chunk."""
        try:
            while True:
                if self._items:
                    chunk = self._items.popleft()
                    self._notify()
                    yield chunk
                elif self._done:
                    if self._error is not None:
                        raise TransientUpstreamError(
                            f"download failed: {self._error}", reason="connection"
                        )
                    return
                else:
                    try:
                        await self._changes()
                    except TimeoutError as error:
                        raise TransientUpstreamError(
                            "download gave no bytes in time", reason="stall"
                        ) from error
        finally:
            self.leave()

    def leave(self) -> None:
        """The client is gone (or left behind): nothing more is queued for it."""
        self.client_gone = True
        self._items.clear()
        self._notify()


class TeeUpstream:
    """The upstream as one download sees it when a client reads along: the same stream, each
    chunk offered to the `Tee` once the download asks for the next one; the last is held."""

    def __init__(self, upstream: Upstream, tee: Tee) -> None:
        self.upstream = upstream
        self.tee = tee
        self.last: bytes | None = None

    async def metadata(self, image_id: str) -> ImageMeta:
        return await self.upstream.metadata(image_id)

    @asynccontextmanager
    async def open(
        self, image_id: str, offset: int, *, validator: str | None = None
    ) -> AsyncIterator[ByteStream]:
        async with self.upstream.open(image_id, 0) as stream:
            self.tee.started()

            async def source() -> AsyncIterator[bytes]:
                async for chunk in stream.chunks():
                    yield chunk  # the download takes it in, then asks for the next one
                    if self.last is not None:
                        await self.tee.offer(self.last)
                    self.last = chunk

            yield ChunkStream(offset=stream.offset, source=source, validator=stream.validator)

    async def close(self) -> None:
        return None
