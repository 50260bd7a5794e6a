"""One download attempt: upstream bytes → ``incomplete/<id>`` → verified → ``images/<id>``.

Reading, hashing and writing overlap: while chunk N is hashed (md5 and the os_hash, each in its
own thread; hashlib releases the GIL) and written (a third thread), chunk N+1 is being read.
At most two chunks are in memory per download. A resume first re-hashes the bytes already in
``incomplete/<id>`` and asks the upstream for the rest with ``Range``.

A resume never splices two versions of an image: a new partial records the version it is read
from (`ByteStream.validator`, kept in ``resume/<id>`` so it survives a restart), a resume hands
it back (``If-Range``) and the upstream starts over from byte 0 when the image changed. With
neither a validator nor a digest to catch a splice, a resume starts over instead (`_resume_at`).

Bounds: a body is never read past what it may hold — the upstream's declared size (a longer
body fails at the first chunk carrying an extra byte, reason ``too_long``), else ``max_size``;
without a declared size the download's room is reserved as it grows (`reserve`), so the cache
cannot pass ``max_size`` on images of unknown size.

Errors (each with a snake_case `reason`: the metric label)::

    FetchError
     ├── TransientFetchError   retry later: the upstream's transient reasons (connection, stall,
     │                         upstream_5xx, truncated, ...), no_room
     └── PermanentFetchError   give up: the upstream's permanent reasons (not_found, refused,
                               redirect, ...), verification, too_large, too_long, disk_full,
                               write_failed

`upstream_errors()` is the one place an `UpstreamError` becomes a `FetchError` (as httpx maps
transport errors once); the reason is carried over unchanged.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from imagecache.agent.cache.store import Store
from imagecache.agent.upstream.port import (
    CHUNK_SIZE,
    DEFAULT_HASH_ALGO,
    HASH_ALGOS,
    ImageMeta,
    TransientUpstreamError,
    Upstream,
    UpstreamError,
)
from imagecache.core.sizes import format_size

WRITEBACK_EVERY = 32 * 2**20  # start writeback early: the final fsync has little left
RESERVE_STEP = 64 * 2**20  # an image of unknown size reserves room in steps of this


class FetchError(Exception):
    """A download attempt failed; `reason` is a short snake_case label."""

    reason = "other"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientFetchError(FetchError):
    """Worth another attempt."""


class PermanentFetchError(FetchError):
    """Not worth another attempt; the message is what the image's report says."""


@contextmanager
def upstream_errors() -> Iterator[None]:
    """Translate what an upstream raises into a `FetchError` (same message and reason)."""
    try:
        yield
    except TransientUpstreamError as error:
        raise TransientFetchError(str(error), reason=error.reason) from error
    except UpstreamError as error:
        message = "image not found upstream" if error.reason == "not_found" else str(error)
        raise PermanentFetchError(message, reason=error.reason) from error


@dataclass(frozen=True)
class Fetched:
    size: int
    md5: str


def _rehash(store: Store, image_id: str, hashers: list[Any]) -> int:
    done = 0
    for chunk in store.read_partial(image_id, CHUNK_SIZE):
        for hasher in hashers:
            hasher.update(chunk)
        done += len(chunk)
    return done


async def fetch(
    *,
    upstream: Upstream,
    store: Store,
    image_id: str,
    meta: ImageMeta,
    max_size: int,
    on_progress: Callable[[int], None],
    resume_from: int,
    commit: Callable[[BinaryIO, Fetched], Awaitable[None]],
    reserve: Callable[[int], Awaitable[None]] | None = None,
) -> Fetched:
    """Download, verify and commit one image (one attempt).

    When `meta.size` is unknown, `reserve(total)` is awaited before the bytes on disk pass what
    was reserved so far (in steps of `RESERVE_STEP`, never above `max_size`); it raises a
    `FetchError` when the room cannot be had.

    `commit` takes the open file that was written and hashed, once it is verified, and puts it
    in place (it owns the handle from then on).
    """
    algo = (meta.os_hash_algo or DEFAULT_HASH_ALGO).lower()
    if algo not in HASH_ALGOS:  # upstreams check this already (upstreams.image_meta)
        raise PermanentFetchError(
            f"unsupported os_hash_algo {algo[:32]!r}", reason="unsupported_hash_algo"
        )
    md5, os_hash = hashlib.md5(), hashlib.new(algo)
    hashers: list[Any] = [md5, os_hash]
    offset, validator = await _resume_at(store, image_id, meta, resume_from)
    handle: BinaryIO | None = None
    try:
        if offset:
            offset = await asyncio.to_thread(_rehash, store, image_id, hashers)
        grow = _Growth(reserve, max_size) if meta.size is None and reserve is not None else None
        with upstream_errors():
            async with upstream.open(image_id, offset, validator=validator) as stream:
                if stream.offset != offset:  # the upstream ignored Range: start over
                    md5, os_hash = hashlib.md5(), hashlib.new(algo)
                    hashers = [md5, os_hash]
                    offset = stream.offset
                handle = await asyncio.to_thread(store.open_partial, image_id, offset)
                if offset == 0:  # a new partial: the version its bytes come from
                    await asyncio.to_thread(store.keep_validator, image_id, stream.validator)
                done = await _pump(
                    stream.chunks(),
                    handle,
                    hashers,
                    offset,
                    _Bounds(meta.size, max_size, grow),
                    on_progress,
                )
        failure = _verify(meta, done, md5.hexdigest(), os_hash.hexdigest(), algo)
        if failure is not None:
            await asyncio.to_thread(handle.close)
            handle = None
            await asyncio.to_thread(store.reject, image_id)
            raise PermanentFetchError(failure, reason="verification")
        fetched = Fetched(size=done, md5=md5.hexdigest())
        await commit(handle, fetched)
        handle = None
        return fetched
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PermanentFetchError("disk full", reason="disk_full") from error
        raise PermanentFetchError(
            f"cache write failed: {error.strerror or error}", reason="write_failed"
        ) from error
    finally:
        if handle is not None:
            await asyncio.shield(asyncio.to_thread(handle.close))


async def _resume_at(
    store: Store, image_id: str, meta: ImageMeta, partial: int
) -> tuple[int, str | None]:
    """Where a download starts (the `partial` bytes on disk, or 0) and the validator to send.

    A resume needs something that catches a splice of two versions: the upstream's validator
    (kept when the partial began) or a digest to verify; with neither it starts over.
    """
    if not partial or (meta.size is not None and partial > meta.size):
        return 0, None
    validator = await asyncio.to_thread(store.read_validator, image_id)
    if validator is None and not (meta.checksum or meta.os_hash_value):
        return 0, None
    return partial, validator


class _Growth:
    """The room reserved so far for an image of unknown size, grown by `reserve`."""

    def __init__(self, reserve: Callable[[int], Awaitable[None]], max_size: int) -> None:
        self.reserve = reserve
        self.max_size = max_size
        self.reserved = 0

    async def cover(self, total: int) -> None:
        if total > self.reserved:
            self.reserved = min(self.max_size, total + RESERVE_STEP)
            await self.reserve(self.reserved)


@dataclass(frozen=True)
class _Bounds:
    """How far a body may go: its declared size, max_size, and the room reserved so far."""

    declared: int | None
    max_size: int
    growth: _Growth | None

    async def check(self, total: int) -> None:
        """Fail before writing a chunk that takes the body to `total` bytes past its bounds."""
        if self.declared is not None and total > self.declared:
            raise PermanentFetchError(
                f"upstream sent more than the declared {self.declared} bytes", reason="too_long"
            )
        if total > self.max_size:
            raise PermanentFetchError(
                f"image is larger than max_size ({format_size(self.max_size)})",
                reason="too_large",
            )
        if self.growth is not None:
            await self.growth.cover(total)


async def _pump(
    chunks: AsyncIterator[bytes],
    handle: BinaryIO,
    hashers: list[Any],
    done: int,
    bounds: _Bounds,
    on_progress: Callable[[int], None],
) -> int:
    """Stream chunks into the file and the hashers; chunk N is absorbed while N+1 is read."""
    pending: Awaitable[Any] | None = None
    flushed = done
    try:
        async with aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if pending is not None:
                    await pending
                await bounds.check(done + len(chunk))
                writeback = done - flushed >= WRITEBACK_EVERY
                if writeback:
                    flushed = done
                done += len(chunk)
                pending = asyncio.ensure_future(
                    _absorb(chunk, handle, hashers, done, on_progress, writeback)
                )
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:  # let the threads finish with the file before it is closed
            await asyncio.shield(asyncio.gather(pending, return_exceptions=True))
    return done


async def _absorb(
    chunk: bytes,
    handle: BinaryIO,
    hashers: list[Any],
    end: int,
    on_progress: Callable[[int], None],
    writeback: bool,
) -> None:
    """Hash (one thread per digest) and write (another thread) one chunk, then report it."""
    await asyncio.gather(
        *(asyncio.to_thread(h.update, chunk) for h in hashers),
        asyncio.to_thread(_write_all, handle, chunk, writeback),
    )
    on_progress(end)


def _write_all(handle: BinaryIO, chunk: bytes, writeback: bool) -> None:
    if writeback:  # bytes written so far start going to disk, without waiting for them
        _start_writeback(handle.fileno())
    view = memoryview(chunk)
    while view:
        written = handle.write(view)
        view = view[written or 0 :]


def _load_start_writeback() -> Callable[[int], None]:
    """Linux `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`, or a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd: None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    sync_file_range_write = 2

    def start(fd: int) -> None:
        function(fd, 0, 0, sync_file_range_write)

    return start


_start_writeback = _load_start_writeback()


def _verify(meta: ImageMeta, size: int, md5: str, os_hash: str, algo: str) -> str | None:
    """The reason the download is wrong, or None when it matches every known field."""
    if meta.size is not None and size != meta.size:
        return f"size mismatch: expected {meta.size} bytes, got {size}"
    if meta.checksum and meta.checksum.lower() != md5:
        return f"checksum mismatch: expected md5 {meta.checksum}, got {md5}"
    if meta.os_hash_value and meta.os_hash_value.lower() != os_hash:
        return f"os_hash mismatch: expected {algo} {meta.os_hash_value[:16]}…, got {os_hash[:16]}…"
    return None
