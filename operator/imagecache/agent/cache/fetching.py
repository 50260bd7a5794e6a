"""One download attempt: upstream bytes → ``incomplete/<id>`` → verified → ``images/<id>``.

Reading, hashing and writing overlap: while chunk N is hashed (each digest in its own thread of
the hashing pool, sized by cores; hashlib releases the GIL) and written (a thread of the default
executor), chunk N+1 is being read. At most two chunks are in memory per download.

Only the digests that will be verified are computed (`Digests`): md5 when the upstream gives
Glance's ``checksum``, the ``os_hash_algo`` when it gives an ``os_hash_value``, and sha256 alone
when it gives neither (the seal needs a digest to vouch with; sha256 is the cheapest strong one
with SHA-NI). The seal records which (`scan.SealFacts`). A resume first re-hashes the bytes
already in ``incomplete/<id>`` — every digest at once, one thread each
(`hashlib.file_digest`) — and asks the upstream for the rest with ``Range``.

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
     │                         upstream_5xx, truncated, ...), no_room, not_a_file (a symlink
     │                         or fifo in place of the partial file: removed, not followed)
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
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from imagecache.agent.cache.nofollow import NotRegularFile
from imagecache.agent.cache.scan import SealFacts
from imagecache.agent.cache.store import Store
from imagecache.agent.upstream.port import (
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
    seal: SealFacts

    @property
    def md5(self) -> str | None:
        """Glance's checksum, when the upstream gave it (and it matched)."""
        return self.seal.md5


SEAL_ALGO_WITHOUT_DIGEST = "sha256"


def hashing_threads() -> int:
    """Threads for hashing: one per core this process may run on (at least two, so the two
    digests of one chunk can run side by side), however many downloads run."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(2, cores)


def hashing_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=hashing_threads(), thread_name_prefix="hash")


class Digests:
    """The digests one download computes: exactly those it will verify (or sha256 alone)."""

    def __init__(self, meta: ImageMeta) -> None:
        algo = (meta.os_hash_algo or DEFAULT_HASH_ALGO).lower()
        if algo not in HASH_ALGOS:  # upstreams check this already (port.image_meta)
            raise PermanentFetchError(
                f"unsupported os_hash_algo {algo[:32]!r}", reason="unsupported_hash_algo"
            )
        self.os_hash_algo = algo
        self.expected: dict[str, str] = {}
        """Expected hex digest by algorithm (what `verify` compares)."""
        if meta.checksum:
            self.expected["md5"] = meta.checksum.lower()
        if meta.os_hash_value:
            self.expected.setdefault(algo, meta.os_hash_value.lower())
        self.os_hash_value = meta.os_hash_value.lower() if meta.os_hash_value else None
        names = list(self.expected) or [SEAL_ALGO_WITHOUT_DIGEST]
        self.seal_algo = algo if meta.os_hash_value else names[0]
        self.hashers: dict[str, Any] = {name: hashlib.new(name) for name in names}

    def reset(self) -> None:
        self.hashers = {name: hashlib.new(name) for name in self.hashers}

    def verify(self, meta: ImageMeta, size: int) -> str | None:
        """The reason the download is wrong, or None when it matches every known field."""
        if meta.size is not None and size != meta.size:
            return f"size mismatch: expected {meta.size} bytes, got {size}"
        got = {name: hasher.hexdigest() for name, hasher in self.hashers.items()}
        if meta.checksum and meta.checksum.lower() != got["md5"]:
            return f"checksum mismatch: expected md5 {meta.checksum}, got {got['md5']}"
        algo = self.os_hash_algo
        if self.os_hash_value and self.os_hash_value != got[algo]:
            return (
                f"os_hash mismatch: expected {algo} {self.os_hash_value[:16]}…, "
                f"got {got[algo][:16]}…"
            )
        return None

    def seal(self) -> SealFacts:
        md5 = self.hashers["md5"].hexdigest() if "md5" in self.expected else None
        return SealFacts(
            algo=self.seal_algo, digest=self.hashers[self.seal_algo].hexdigest(), md5=md5
        )


def _rehash(store: Store, image_id: str, digests: Digests, pool: Executor) -> int:
    """Re-hash the partial file, every digest at once (one thread and one descriptor each)."""
    handles = [store.read_partial(image_id) for _ in digests.hashers]
    try:
        size = os.fstat(handles[0].fileno()).st_size
        futures = {
            name: pool.submit(hashlib.file_digest, handle, name)
            for name, handle in zip(digests.hashers, handles, strict=True)
        }
        digests.hashers = {name: future.result() for name, future in futures.items()}
        if any(handle.tell() != size for handle in handles):
            raise TransientFetchError(
                "partial file changed while re-hashed", reason="partial_replaced"
            )
    finally:
        for handle in handles:
            handle.close()
    return size


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
    hashing: Executor | None = None,
) -> Fetched:
    """Download, verify and commit one image (one attempt).

    When `meta.size` is unknown, `reserve(total)` is awaited before the bytes on disk pass what
    was reserved so far (in steps of `RESERVE_STEP`, never above `max_size`); it raises a
    `FetchError` when the room cannot be had.

    `commit` takes the open file that was written and hashed, once it is verified, and puts it
    in place (it owns the handle from then on). `hashing` runs the digests (the default
    executor when None).
    """
    digests = Digests(meta)
    offset, validator = await _resume_at(store, image_id, meta, resume_from)
    handle: BinaryIO | None = None
    try:
        if offset:
            rehash_pool = hashing or ThreadPoolExecutor(len(digests.hashers))
            try:
                offset = await asyncio.to_thread(_rehash, store, image_id, digests, rehash_pool)
            finally:
                if hashing is None:
                    rehash_pool.shutdown(wait=False)
        grow = _Growth(reserve, max_size) if meta.size is None and reserve is not None else None
        with upstream_errors():
            async with upstream.open(image_id, offset, validator=validator) as stream:
                if stream.offset != offset:  # the upstream ignored Range: start over
                    digests.reset()
                    offset = stream.offset
                handle = await asyncio.to_thread(store.open_partial, image_id, offset)
                if offset == 0:  # a new partial: the version its bytes come from
                    await asyncio.to_thread(store.keep_validator, image_id, stream.validator)
                done = await _pump(
                    stream.chunks(),
                    handle,
                    _Absorb(list(digests.hashers.values()), hashing, on_progress),
                    offset,
                    _Bounds(meta.size, max_size, grow),
                )
        failure = digests.verify(meta, done)
        if failure is not None:
            await asyncio.to_thread(handle.close)
            handle = None
            await asyncio.to_thread(store.reject, image_id)
            raise PermanentFetchError(failure, reason="verification")
        fetched = Fetched(size=done, seal=digests.seal())
        await commit(handle, fetched)
        handle = None
        return fetched
    except NotRegularFile as error:  # removed by the store: the next attempt starts afresh
        raise TransientFetchError(f"cache file refused: {error}", reason="not_a_file") from error
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
    absorb: _Absorb,
    done: int,
    bounds: _Bounds,
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
                pending = asyncio.ensure_future(absorb(chunk, handle, done, writeback))
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:  # let the threads finish with the file before it is closed
            await asyncio.shield(asyncio.gather(pending, return_exceptions=True))
    return done


@dataclass(frozen=True)
class _Absorb:
    """Hash (one pool thread per digest) and write (a default-executor thread) one chunk, then
    report it."""

    hashers: list[Any]
    hashing: Executor | None
    on_progress: Callable[[int], None]

    async def __call__(self, chunk: bytes, handle: BinaryIO, end: int, writeback: bool) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self.hashing, h.update, chunk) for h in self.hashers),
            loop.run_in_executor(None, _write_all, handle, chunk, writeback),
        )
        self.on_progress(end)


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
