"""One download attempt: upstream bytes → ``incomplete/<id>`` → verified → ``images/<id>``.

Reading, hashing and writing overlap: while chunk N is hashed (md5 and the os_hash, each in its
own thread; hashlib releases the GIL) and written (a third thread), chunk N+1 is being read.
At most two chunks are in memory per download. A resume first re-hashes the bytes already in
``incomplete/<id>`` and asks the upstream for the rest with ``Range``.

Errors::

    FetchError
     ├── TransientFetchError   retry later (connection, 5xx, stall, truncated body)
     └── PermanentFetchError   give up (not found, refused, verification, too big, disk full)
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, BinaryIO

from imagecache.agent.store import Store
from imagecache.agent.upstreams import (
    CHUNK_SIZE,
    ImageMeta,
    ImageNotFound,
    TransientUpstreamError,
    Upstream,
    UpstreamError,
)
from imagecache.core.sizes import format_size

WRITEBACK_EVERY = 32 * 2**20  # start writeback early: the final fsync has little left


class FetchError(Exception):
    """A download attempt failed."""


class TransientFetchError(FetchError):
    """Worth another attempt."""


class PermanentFetchError(FetchError):
    """Not worth another attempt; the message is the reason reported."""


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
) -> Fetched:
    """Download, verify and commit one image (one attempt).

    `commit` takes the open file that was written and hashed, once it is verified, and puts it
    in place (it owns the handle from then on).
    """
    algo = (meta.os_hash_algo or "sha512").lower()
    try:
        md5, os_hash = hashlib.md5(), hashlib.new(algo)
    except ValueError as error:
        raise PermanentFetchError(f"unsupported os_hash_algo {algo!r}") from error
    hashers: list[Any] = [md5, os_hash]
    offset = resume_from
    if meta.size is not None and offset > meta.size:
        offset = 0
    handle: BinaryIO | None = None
    try:
        if offset:
            offset = await asyncio.to_thread(_rehash, store, image_id, hashers)
        try:
            async with upstream.open(image_id, offset) as stream:
                if stream.offset != offset:  # the upstream ignored Range: start over
                    md5, os_hash = hashlib.md5(), hashlib.new(algo)
                    hashers = [md5, os_hash]
                    offset = stream.offset
                handle = await asyncio.to_thread(store.open_partial, image_id, offset)
                done = await _pump(stream.chunks(), handle, hashers, offset, max_size, on_progress)
        except ImageNotFound as error:
            raise PermanentFetchError("image not found upstream") from error
        except TransientUpstreamError as error:
            raise TransientFetchError(str(error)) from error
        except UpstreamError as error:
            raise PermanentFetchError(str(error)) from error
        failure = _verify(meta, done, md5.hexdigest(), os_hash.hexdigest(), algo)
        if failure is not None:
            await asyncio.to_thread(handle.close)
            handle = None
            await asyncio.to_thread(store.reject, image_id)
            raise PermanentFetchError(failure)
        fetched = Fetched(size=done, md5=md5.hexdigest())
        await commit(handle, fetched)
        handle = None
        return fetched
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PermanentFetchError("disk full") from error
        raise PermanentFetchError(f"cache write failed: {error.strerror or error}") from error
    finally:
        if handle is not None:
            await asyncio.shield(asyncio.to_thread(handle.close))


async def _pump(
    chunks: AsyncIterator[bytes],
    handle: BinaryIO,
    hashers: list[Any],
    done: int,
    max_size: int,
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
                if done + len(chunk) > max_size:
                    raise PermanentFetchError(
                        f"image is larger than max_size ({format_size(max_size)})"
                    )
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
