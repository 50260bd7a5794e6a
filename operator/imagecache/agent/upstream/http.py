"""HTTP upstreams: a plain HTTP(S) server (``GET <base>/X``, ``HEAD`` for metadata) and a Glance
image API (``/v2/images/{id}`` then ``/v2/images/{id}/file``), both resumable with ``Range``.

Every request carries the headers of the upstream's `UpstreamAuth` (upstream_auth.py); a 401 is
reported to it (a Keystone token is then renewed) and the request is tried once more. No request
follows a redirect: a 3xx answer is a `BadUpstreamAnswer` (reason ``redirect``), so the
credentials and the image never come from anywhere but the configured upstream. JSON documents
are read up to `METADATA_LIMIT` bytes. A Glance
upstream's base URL may come from the service catalog (``glance://``), asked on first use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from imagecache.agent.upstream.auth import NoAuth, UpstreamAuth
from imagecache.agent.upstream.documents import load_document
from imagecache.agent.upstream.port import (
    CHUNK_SIZE,
    FLUSH_AFTER,
    METADATA_LIMIT,
    BadUpstreamAnswer,
    ByteStream,
    ChunkStream,
    ImageMeta,
    ImageNotFound,
    PermanentUpstreamError,
    TransientUpstreamError,
    image_meta,
)
from imagecache.core.ids import is_uuid, is_valid_image_id
from imagecache.http_bodies import BodyTooLarge, read_bounded

IDENTITY = {"Accept-Encoding": "identity"}
VALIDATOR_LIMIT = 256  # characters: the longest ETag or Last-Modified kept for If-Range
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")


def segment(image_id: str) -> str:
    """An (already validated) image id as one URL path segment: nothing in it is a separator."""
    return quote(image_id, safe="")


class _HttpBase:
    def __init__(
        self,
        base: str,
        *,
        stall_timeout: float,
        auth: UpstreamAuth | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.base = base.rstrip("/")
        self.stall_timeout = stall_timeout
        self.auth: UpstreamAuth = auth or NoAuth()
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
                headers=IDENTITY,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def base_url(self) -> str:
        return self.base

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: Sequence[tuple[str, str]] = (),
    ) -> aiohttp.ClientResponse:
        """One authenticated request (again once after a 401); the caller releases it.

        Redirects are not followed: a 3xx raises `BadUpstreamAnswer` (reason ``redirect``), as
        does an answer in any ``Content-Encoding`` but identity (reason ``content_encoding``).
        """
        url = f"{await self.base_url()}{path}"
        for attempt in (1, 2):
            sent = {**(headers or {}), **await self.auth.headers()}
            try:
                async with asyncio.timeout(self.stall_timeout):
                    response = await self.session.request(
                        method, url, headers=sent, params=list(params), allow_redirects=False
                    )
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                raise TransientUpstreamError(
                    f"cannot reach upstream: {error!r}", reason="connection"
                ) from error
            if 300 <= response.status < 400:
                response.release()
                raise BadUpstreamAnswer(
                    f"upstream redirected to another location (answered {response.status}); "
                    "redirects are not followed",
                    reason="redirect",
                )
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                response.release()
                raise BadUpstreamAnswer(
                    f"upstream answered with Content-Encoding {encoding[:32]!r}; the agent asks "
                    "for identity encoding only and never stores or passes on encoded bytes",
                    reason="content_encoding",
                )
            if response.status != 401 or attempt == 2:
                return response
            response.release()
            await self.auth.refused()
        raise AssertionError("unreachable")

    def _bytes_path(self, image_id: str) -> str:
        raise NotImplementedError

    @asynccontextmanager
    async def open(
        self, image_id: str, offset: int, *, validator: str | None = None
    ) -> AsyncIterator[ByteStream]:
        path = self._bytes_path(image_id)
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        if offset > 0 and validator is not None:
            headers["If-Range"] = validator
        response = await self._request("GET", path, headers=headers)
        try:
            misfit = response.status == 206 and not range_fits(
                response.headers.get("Content-Range", ""), response.content_length, offset
            )
            if offset > 0 and (response.status == 416 or misfit):
                response.release()
                async with self.open(image_id, 0) as fresh:
                    yield fresh
                return
            if misfit:
                raise BadUpstreamAnswer(
                    "upstream answered 206 with a Content-Range that does not start at byte 0 "
                    f"or run to the end: {response.headers.get('Content-Range', '')[:64]!r}",
                    reason="bad_range",
                )
            _raise_for_status(response.status, image_id)
            start = offset if response.status == 206 else 0
            yield ChunkStream(
                offset=start,
                source=lambda: self._read(response),
                validator=validator_of(response.headers),
            )
        finally:
            response.release()

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Chunks of up to `chunk_size`; a partial chunk is handed on when the upstream pauses
        or once it has been held for `FLUSH_AFTER` (so progress moves at least that often on a
        slow upstream, and a drop loses nothing already received).

        The pieces the connection delivers are collected in a list and joined once per chunk
        (no copy at all when one piece is the chunk): growing a buffer per piece cost three
        copies of every byte and a page fault per page.
        """
        pieces: list[bytes] = []
        held = 0  # bytes in `pieces`
        held_since = 0.0  # when the oldest byte in `pieces` arrived
        expected = response.content_length
        received = 0
        content = response.content
        clock = asyncio.get_running_loop().time
        while True:
            failure: TransientUpstreamError | None = None
            piece = b""
            try:
                piece = content.read_nowait(self.chunk_size - held) if held else b""
                if not piece and held:
                    try:
                        async with asyncio.timeout(FLUSH_AFTER):
                            piece = await content.readany()
                    except TimeoutError:
                        yield _joined(pieces)
                        pieces, held = [], 0
                        continue
                elif not piece:
                    async with asyncio.timeout(self.stall_timeout):
                        piece = await content.readany()
            except TimeoutError as error:
                failure = TransientUpstreamError(
                    f"upstream stalled for {self.stall_timeout:g}s", reason="stall"
                )
                failure.__cause__ = error
            except (aiohttp.ClientError, OSError) as error:
                failure = TransientUpstreamError(f"connection lost: {error!r}", reason="connection")
                failure.__cause__ = error
            if failure is not None:
                if held:  # keep what arrived: the next attempt resumes after it
                    yield _joined(pieces)
                raise failure
            if not piece:
                break
            received += len(piece)
            if not held:
                held_since = clock()
            pieces.append(piece)
            held += len(piece)
            if held >= self.chunk_size or clock() - held_since >= FLUSH_AFTER:
                yield _joined(pieces)
                pieces, held = [], 0
        if held:
            yield _joined(pieces)
        if expected is not None and received < expected:
            raise TransientUpstreamError(
                f"connection closed after {received} of {expected} bytes", reason="truncated"
            )


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def range_fits(content_range: str, length: int | None, offset: int) -> bool:
    """Whether a 206 holds the bytes from `offset` to the end: its ``Content-Range`` starts at
    `offset` and ends at ``total - 1``, and ``Content-Length`` (when sent) is that length."""
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    if match is None:
        return False
    start, end, total = (int(group) for group in match.groups())
    return (
        start == offset
        and start <= end
        and end == total - 1
        and (length is None or length == end - start + 1)
    )


def validator_of(headers: Mapping[str, str]) -> str | None:
    """What identifies this version of the image for ``If-Range``: a strong ``ETag``, else
    ``Last-Modified``; None when the answer has neither (or only malformed ones)."""
    etag = headers.get("ETag", "")
    if _is_header_text(etag) and len(etag) >= 2 and etag[0] == etag[-1] == '"':
        return etag  # a weak ETag (W/"...") never matches If-Range: not kept
    modified = headers.get("Last-Modified", "")
    return modified if _is_header_text(modified) else None


def _is_header_text(value: str) -> bool:
    return 0 < len(value) <= VALIDATOR_LIMIT and all(" " <= c <= "~" for c in value)


def _raise_for_status(status: int, image_id: str) -> None:
    if status in (200, 206):
        return
    if status == 404:
        raise ImageNotFound(image_id)
    if status >= 500:
        raise TransientUpstreamError(f"upstream answered {status}", reason="upstream_5xx")
    if status in (408, 429):
        raise TransientUpstreamError(f"upstream answered {status}", reason="upstream_busy")
    if status == 204:
        raise BadUpstreamAnswer("upstream has no data for this image", reason="no_data")
    if status in (401, 403):
        raise PermanentUpstreamError(
            f"upstream answered {status}: the agent's credentials were refused",
            reason="unauthorized",
        )
    raise PermanentUpstreamError(f"upstream answered {status}", reason="refused")


class HttpUpstream(_HttpBase):
    """Image ``X`` is ``GET <base>/X``; ``HEAD`` gives its size (and ``Content-MD5`` if sent)."""

    def _bytes_path(self, image_id: str) -> str:
        if not is_valid_image_id(image_id):
            raise ImageNotFound(image_id)
        return f"/{segment(image_id)}"

    async def metadata(self, image_id: str) -> ImageMeta:
        response = await self._request("HEAD", self._bytes_path(image_id))
        try:
            _raise_for_status(response.status, image_id)
            return image_meta(
                size=response.content_length,
                checksum=_md5_header(response.headers.get("Content-MD5")),
            )
        finally:
            response.release()


class GlanceUpstream(_HttpBase):
    """A Glance image API: ``GET /v2/images/{id}`` then ``GET /v2/images/{id}/file``.

    `endpoint`, when given, finds the base URL (the service catalog's image endpoint) on
    first use instead of `base`.
    """

    def __init__(
        self,
        base: str,
        *,
        endpoint: Callable[[], Awaitable[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base, **kwargs)
        self.endpoint = endpoint

    async def base_url(self) -> str:
        if self.endpoint is not None and not self.base:
            self.base = (await self.endpoint()).rstrip("/")
        return self.base

    def _check(self, image_id: str) -> None:
        if not is_uuid(image_id):
            raise ImageNotFound(image_id)

    def image_path(self, image_id: str) -> str:
        """``/v2/images/{id}`` for a UUID (else `ImageNotFound`), the id quoted."""
        self._check(image_id)
        return f"/v2/images/{segment(image_id)}"

    def _bytes_path(self, image_id: str) -> str:
        return f"{self.image_path(image_id)}/file"

    async def metadata(self, image_id: str) -> ImageMeta:
        status, doc = await self.get_json(self.image_path(image_id))
        _raise_for_status(status, image_id)
        if not isinstance(doc, dict):
            raise BadUpstreamAnswer("upstream sent a non-object image", reason="bad_metadata")
        return image_meta(
            size=doc.get("size"),
            status=doc.get("status", ""),
            checksum=doc.get("checksum"),
            os_hash_algo=doc.get("os_hash_algo"),
            os_hash_value=doc.get("os_hash_value"),
        )

    async def get_json(self, path: str, query: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
        """``GET <base><path>?<query>`` with the agent's credentials: (status, JSON or None).

        For the image metadata views (image_index.GlanceImageIndex), which pass Glance's
        answers on. A document over `METADATA_LIMIT` bytes is a `BadUpstreamAnswer` (reason
        ``metadata_too_large``), found without reading more than the limit. A 2xx document
        must pass `load_document` (else `BadUpstreamAnswer`); an error's body is only a hint,
        None when it does not.
        """
        # Glance answers errors in HTML unless asked for JSON.
        response = await self._request(
            "GET", path, params=query, headers={"Accept": "application/json"}
        )
        try:
            async with asyncio.timeout(self.stall_timeout):
                body = await _read_bounded(response, METADATA_LIMIT)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TransientUpstreamError(
                f"upstream answer cut: {error!r}", reason="truncated"
            ) from error
        finally:
            response.release()
        if 200 <= response.status < 300:
            return response.status, load_document(body, source="upstream image document")
        try:
            return response.status, load_document(body, source="upstream error document")
        except BadUpstreamAnswer:
            return response.status, None


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `BadUpstreamAnswer` as soon as it is known to exceed `limit`."""
    try:
        return await read_bounded(response, limit)
    except BodyTooLarge as error:
        raise BadUpstreamAnswer(
            f"upstream metadata document is larger than {limit} bytes",
            reason="metadata_too_large",
        ) from error


def _md5_header(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) == 32 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
