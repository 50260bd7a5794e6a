"""HTTP upstreams: a plain HTTP(S) server (``GET <base>/X``, ``HEAD`` for metadata) and a Glance
image API (``/v2/images/{id}`` then ``/v2/images/{id}/file``), both resumable with ``Range``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from imagecache.agent.upstreams import (
    CHUNK_SIZE,
    FLUSH_AFTER,
    ByteStream,
    ChunkStream,
    ImageMeta,
    ImageNotFound,
    PermanentUpstreamError,
    TransientUpstreamError,
    optional_text,
)
from imagecache.core.ids import is_uuid, is_valid_image_id


class _HttpBase:
    def __init__(
        self,
        base: str,
        *,
        stall_timeout: float,
        token: Callable[[], str | None] = lambda: None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.base = base.rstrip("/")
        self.stall_timeout = stall_timeout
        self.token = token
        self.chunk_size = chunk_size
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.stall_timeout, sock_connect=self.stall_timeout
                ),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        token = self.token()
        return {"X-Auth-Token": token} if token else {}

    def _bytes_url(self, image_id: str) -> str:
        raise NotImplementedError

    @asynccontextmanager
    async def open(self, image_id: str, offset: int) -> AsyncIterator[ByteStream]:
        url = self._bytes_url(image_id)
        headers = self._headers()
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with asyncio.timeout(self.stall_timeout):
                response = await self.session.get(url, headers=headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TransientUpstreamError(f"cannot reach upstream: {error!r}") from error
        try:
            if response.status == 416 and offset > 0:
                response.release()
                async with self.open(image_id, 0) as fresh:
                    yield fresh
                return
            _raise_for_status(response.status, image_id)
            start = offset if response.status == 206 else 0
            yield ChunkStream(offset=start, source=lambda: self._read(response))
        finally:
            response.release()

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Chunks of up to `chunk_size`; a partial chunk is handed on when the upstream pauses
        or once it has been held for `FLUSH_AFTER` (so progress moves at least that often on a
        slow upstream, and a drop loses nothing already received)."""
        buffer = bytearray()
        held_since = 0.0  # when the oldest byte in `buffer` arrived
        expected = response.content_length
        received = 0
        content = response.content
        clock = asyncio.get_running_loop().time
        while True:
            failure: TransientUpstreamError | None = None
            piece = b""
            try:
                piece = content.read_nowait(self.chunk_size - len(buffer)) if buffer else b""
                if not piece and buffer:
                    try:
                        async with asyncio.timeout(FLUSH_AFTER):
                            piece = await content.readany()
                    except TimeoutError:
                        yield bytes(buffer)
                        buffer.clear()
                        continue
                elif not piece:
                    async with asyncio.timeout(self.stall_timeout):
                        piece = await content.readany()
            except TimeoutError as error:
                failure = TransientUpstreamError(f"upstream stalled for {self.stall_timeout:g}s")
                failure.__cause__ = error
            except (aiohttp.ClientError, OSError) as error:
                failure = TransientUpstreamError(f"connection lost: {error!r}")
                failure.__cause__ = error
            if failure is not None:
                if buffer:  # keep what arrived: the next attempt resumes after it
                    yield bytes(buffer)
                raise failure
            if not piece:
                break
            received += len(piece)
            if not buffer:
                held_since = clock()
            buffer += piece
            if len(buffer) >= self.chunk_size or clock() - held_since >= FLUSH_AFTER:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)
        if expected is not None and received < expected:
            raise TransientUpstreamError(f"connection closed after {received} of {expected} bytes")


def _raise_for_status(status: int, image_id: str) -> None:
    if status in (200, 206):
        return
    if status == 404:
        raise ImageNotFound(image_id)
    if status >= 500 or status in (408, 429):
        raise TransientUpstreamError(f"upstream answered {status}")
    if status == 204:
        raise PermanentUpstreamError("upstream has no data for this image")
    raise PermanentUpstreamError(f"upstream answered {status}")


class HttpUpstream(_HttpBase):
    """Image ``X`` is ``GET <base>/X``; ``HEAD`` gives its size (and ``Content-MD5`` if sent)."""

    def _bytes_url(self, image_id: str) -> str:
        if not is_valid_image_id(image_id):
            raise ImageNotFound(image_id)
        return f"{self.base}/{image_id}"

    async def metadata(self, image_id: str) -> ImageMeta:
        url = self._bytes_url(image_id)
        try:
            async with asyncio.timeout(self.stall_timeout):
                async with self.session.head(url, headers=self._headers()) as response:
                    _raise_for_status(response.status, image_id)
                    length = response.headers.get("Content-Length")
                    return ImageMeta(
                        size=int(length) if length and length.isdigit() else None,
                        checksum=_md5_header(response.headers.get("Content-MD5")),
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TransientUpstreamError(f"cannot reach upstream: {error!r}") from error


class GlanceUpstream(_HttpBase):
    """A Glance image API: ``GET /v2/images/{id}`` then ``GET /v2/images/{id}/file``."""

    def _check(self, image_id: str) -> None:
        if not is_uuid(image_id):
            raise ImageNotFound(image_id)

    def _bytes_url(self, image_id: str) -> str:
        self._check(image_id)
        return f"{self.base}/v2/images/{image_id}/file"

    async def metadata(self, image_id: str) -> ImageMeta:
        self._check(image_id)
        url = f"{self.base}/v2/images/{image_id}"
        try:
            async with asyncio.timeout(self.stall_timeout):
                async with self.session.get(url, headers=self._headers()) as response:
                    _raise_for_status(response.status, image_id)
                    doc = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TransientUpstreamError(f"cannot reach upstream: {error!r}") from error
        except ValueError as error:
            raise PermanentUpstreamError(f"upstream sent bad JSON: {error}") from error
        if not isinstance(doc, dict):
            raise PermanentUpstreamError("upstream sent a non-object image")
        size = doc.get("size")
        return ImageMeta(
            size=size if isinstance(size, int) else None,
            status=str(doc.get("status", "")),
            checksum=optional_text(doc.get("checksum")),
            os_hash_algo=optional_text(doc.get("os_hash_algo")),
            os_hash_value=optional_text(doc.get("os_hash_value")),
        )

    async def get_json(self, path: str, query: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
        """``GET <base><path>?<query>`` with the agent's credentials: (status, JSON or None).

        For the image metadata views (image_index.GlanceImageIndex), which pass Glance's
        answers on.
        """
        try:
            async with asyncio.timeout(self.stall_timeout):
                async with self.session.get(
                    f"{self.base}{path}", params=list(query), headers=self._headers()
                ) as response:
                    try:
                        doc = await response.json(content_type=None)
                    except ValueError:
                        doc = None
                    return response.status, doc
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TransientUpstreamError(f"cannot reach upstream: {error!r}") from error


def _md5_header(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) == 32:
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def read_token(path: Path | None) -> Callable[[], str | None]:
    """A callable giving the first line of `path` (re-read when the file changes)."""
    if path is None:
        return lambda: None
    cache: dict[str, Any] = {"key": None, "token": None}

    def token() -> str | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key != cache["key"]:
            lines = path.read_text().strip().splitlines()
            cache["key"], cache["token"] = key, (lines[0].strip() if lines else None)
        return cache["token"]  # type: ignore[no-any-return]

    return token
