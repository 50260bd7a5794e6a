"""Serving a cached image from the descriptor the cache opened — never by its path again.

aiohttp's `FileResponse` opens a path itself (following symlinks, and trying ``<path>.gz``
siblings): between the cache's checks and that open, ``images/<id>`` could be swapped for a link
to a file outside the cache. `CachedFileResponse` sends the bytes of the very descriptor
`ImageCache.open_cached` opened with ``O_NOFOLLOW`` and checked to be a regular file of the
recorded size: zero-copy (`loop.sendfile`), one byte range (``Range``, ``If-Range``, 416 when
unsatisfiable), ``HEAD``, ``ETag``/``Last-Modified`` as aiohttp computes them. A client that
reads nothing for ``serve_idle_timeout`` is disconnected (`read_deadline`), so a stalled reader
cannot keep the image pinned for ever. The pin and the descriptor are released once the
response is sent (or fails).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from imagecache.agent.cache.facade import CachedFile
from imagecache.agent.http.read_deadline import read_deadline

log = logging.getLogger("imagecache.agent.http")


class CachedFileResponse(web.StreamResponse):
    """One cached image, sent from its open descriptor."""

    def __init__(self, served: CachedFile, *, idle_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._served = served
        self._idle_timeout = idle_timeout

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        try:
            async with read_deadline(request.transport, idle=self._idle_timeout, what=request.path):
                return await self._send(request)
        except ConnectionError as error:
            log.info(
                "client went away while %s was sent: %s",
                request.path,
                error,
                extra={"event": "client_gone"},
            )
            raise
        finally:
            self._served.release()

    async def _send(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        served = self._served
        size = served.size
        start, count = 0, size
        self.etag = f"{served.mtime_ns:x}-{size:x}"
        self.last_modified = served.mtime_ns / 1e9
        self.headers["Accept-Ranges"] = "bytes"
        if_range = request.if_range
        if if_range is None or served.mtime_ns / 1e9 <= if_range.timestamp():
            try:
                wanted = request.http_range
            except ValueError:
                return await self._unsatisfiable(request, size)
            if wanted.start is not None:
                if wanted.start < 0 and wanted.stop is None:  # a suffix: the last N bytes
                    start = max(0, size + wanted.start)
                    count = size - start
                else:
                    start = wanted.start
                    stop = wanted.stop if wanted.stop is not None else size
                    count = min(stop, size) - start
                if start >= size:
                    return await self._unsatisfiable(request, size)
                self.set_status(206)
                self.headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{size}"
        self.content_length = count
        writer = await super().prepare(request)
        if count == 0 or request.method == "HEAD":
            return writer
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        await asyncio.get_running_loop().sendfile(transport, served.handle, start, count)
        await super().write_eof()
        return writer

    async def _unsatisfiable(self, request: web.BaseRequest, size: int) -> AbstractStreamWriter:
        self.set_status(416)
        self.headers["Content-Range"] = f"bytes */{size}"
        self.content_length = 0
        writer = await super().prepare(request)
        assert writer is not None
        return writer
