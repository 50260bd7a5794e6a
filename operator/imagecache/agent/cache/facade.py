"""`ImageCache`: the agent's service facade — what the views and the app lifecycle call.

Lifecycle (`open`, `drain`, `close`, `readiness`), the Glance cache API (`queue`, `delete`,
`clear`, `listing`, `report`), serving (`open_cached`, `pin`, `read_through`) and upkeep
(`prune`, `clean`, `holds`, `check_upstream`) and the upstream's image documents
(`image_document`, `image_documents`). It raises the cache's own errors (`cache.errors`) and
lets the upstream's (`upstream.port.UpstreamError`) through; the HTTP layer maps both. The work
is done by:

- `downloading.Downloader`: the worker pool's job (retries, one attempt, the commit);
- `room.Room`: reservations and eviction under ``max_size``;
- `pins.Pins`: files being served, and those removed while served;
- `locks.IdLocks`: operations on one image id never interleave (queue, delete, clear,
  evict, commit, fail each hold the id).

Live records are an `ImageTable` persisted through `Database`; state changes go through the
pure functions of `imagecache.core.images`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from imagecache.agent.cache.db import Database
from imagecache.agent.cache.downloading import Downloader, to_completion
from imagecache.agent.cache.errors import CacheError, ImageNotActive, QueueFull, UnknownImage
from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.maintenance import clean_directory, prune_victims
from imagecache.agent.cache.peer_fill import PeerGrant
from imagecache.agent.cache.pins import Pins
from imagecache.agent.cache.recovery import open_and_repair
from imagecache.agent.cache.room import Room
from imagecache.agent.cache.store import Store
from imagecache.agent.cache.tee import Detached, Tee
from imagecache.agent.cache.workers import WorkerPool
from imagecache.agent.metrics import AgentMetrics
from imagecache.agent.settings import AgentSettings
from imagecache.agent.upstream.index import Document, ImageIndex, Query, make_image_index
from imagecache.agent.upstream.port import (
    BadUpstreamAnswer,
    ByteStream,
    ChunkStream,
    ImageMeta,
    ImageNotFound,
    Upstream,
    UpstreamError,
)
from imagecache.core import images
from imagecache.core.eviction import Candidate
from imagecache.core.ids import is_valid_image_id
from imagecache.core.images import ImageRecord, State
from imagecache.core.recovery import invalid_budget
from imagecache.core.table import ImageTable
from imagecache.core.wire import ImageReport

log = logging.getLogger("imagecache.agent")

ClearTarget = Literal["all", "cache", "queue"]
CLEARED: dict[ClearTarget, tuple[State, ...]] = {
    "all": ("cached", "queued", "caching"),
    "cache": ("cached",),
    "queue": ("queued", "caching"),
}
QUEUE_FULL_RETRY_AFTER = 30  # seconds; a full queue drains at download speed, not instantly
CLOSE_STEP_TIMEOUT = 40.0  # seconds each step of `close` may take (the database: 30 + 5)


@dataclass(frozen=True)
class CachedFile:
    """A cached image opened for serving: a regular file of the recorded size, opened without
    following links. `release` (once sent) closes it and releases the pin."""

    handle: io.FileIO
    size: int
    mtime_ns: int
    checksum: str | None
    unpin: Callable[[], None]

    def release(self) -> None:
        try:
            self.handle.close()
        finally:
            self.unpin()


@dataclass(frozen=True)
class ReadThrough:
    """A miss served from the upstream: its metadata, and its bytes from the first (`open`:
    the download's own stream when it reads along, see tee.py, else a stream of its own)."""

    meta: ImageMeta
    open: Callable[[], AbstractAsyncContextManager[ByteStream]]


class ImageCache:
    """One cache directory's images, their queue and their downloads."""

    def __init__(self, settings: AgentSettings, upstream: Upstream, metrics: AgentMetrics) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.store = Store(settings.cache_dir, invalid_max_bytes=invalid_budget(settings.max_size))
        self.db = Database(self.store.database)
        self.records = ImageTable()
        self.locks = IdLocks()
        self.pins = Pins(on_unpinned=self._unpinned)
        self.room = Room(
            max_size=settings.max_size,
            wait_timeout=settings.room_wait_timeout,
            records=self.records,
            pins=self.pins,
            locks=self.locks,
            evict=self._evict,
        )
        self.downloader = Downloader(
            settings=settings,
            upstream=upstream,
            store=self.store,
            db=self.db,
            records=self.records,
            metrics=metrics,
            locks=self.locks,
            pins=self.pins,
            room=self.room,
            off_duty=lambda: self.pool.off_duty(),
        )
        self.pool = WorkerPool(settings.workers, self.downloader.run, metrics.worker_restarts.inc)
        self.index: ImageIndex = make_image_index(upstream)
        self._seq = 0
        self._removals: set[asyncio.Task[None]] = set()
        metrics.bind(
            cache_bytes=lambda: float(self.records.cached_bytes),
            cache_images=lambda: float(self.records.count("cached")),
            queue_length=lambda: float(self.records.count("queued", "caching")),
            in_flight=lambda: float(len(self.pool.running)),
            invalid_files=lambda: float(self.store.invalid_files),
            invalid_bytes=lambda: float(self.store.invalid_bytes),
        )
        metrics.watch_filesystem(self.store.root, max_size=settings.max_size)

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the layout, load and repair the records, start the workers, resume the queue."""
        await asyncio.to_thread(self.store.create)
        plan = await open_and_repair(self.store, self.db)
        for record in plan.records:
            self.records[record.image_id] = record
            self._seq = max(self._seq, record.seq)
        self.pool.start()
        for record in self.records.queue_order():
            self.pool.submit(record.image_id, record.seq)
        log.info("cache opened", extra={"event": "opened", "images": len(self.records)})

    async def drain(self, grace: float) -> None:
        """SIGTERM: start no new download; those running get `grace` seconds to finish.

        The ones still running afterwards are stopped by `close` and resume at the next start
        (their records stay queued or caching, their partial files stay).
        """
        running = self.pool.drain()
        if running:
            log.info(
                "draining %d downloads for up to %.0fs",
                len(running),
                grace,
                extra={"event": "draining"},
            )
            await asyncio.wait(running, timeout=grace)

    async def close(self) -> None:
        """Stop the workers, finish file removals, close the database and the upstream: every
        step is bounded (`CLOSE_STEP_TIMEOUT`) and taken even when an earlier one failed or
        timed out (logged), so nothing is left open."""
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("the workers", self.pool.stop),
            ("the hashing threads", self._stop_hashing),
            ("file removals", self._finish_removals),
            ("the database", self.db.close),
            ("the upstream", self.upstream.close),
        ]
        for name, step in steps:
            try:
                async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                    await step()
            except Exception:
                log.exception("closing %s failed; closing the rest", name)

    async def _stop_hashing(self) -> None:
        self.downloader.close()

    async def _finish_removals(self) -> None:
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)

    def ready(self) -> dict[str, bool]:
        return {"database": self.db.is_open, "workers": self.pool.alive()}

    async def readiness(self) -> dict[str, bool]:
        """`/readyz`'s checks: the database, the workers and a writable cache directory."""
        checks = self.ready()
        checks["cache_dir"] = await asyncio.to_thread(self.store.writable)
        return checks

    # --- the Glance cache API --------------------------------------------------------------
    async def queue(
        self, image_id: str, *, meta: ImageMeta | None = None, peer: PeerGrant | None = None
    ) -> None:
        """`PUT /v2/cache/{id}`: durably queued on return (idempotent); `QueueFull` at the bound.

        With a `peer` (fleet fill) the bytes are taken from that agent (`peer_fill`): its URL
        is stored with the record, its credential kept in memory only.

        The upstream's metadata (`meta`, when the caller already has it) is handed to the
        download, so an image's metadata is asked once. An answer outside the agent's bounds
        (`BadUpstreamAnswer`: a redirect, an unsupported digest, ...) records the image
        ``failed`` with that reason at once. A queued or caching record that no download owns
        any more (`_stale`) is queued afresh, as a failed one is.
        """
        await self._queue(image_id, meta=meta, peer=peer, tee=None)

    async def _queue(
        self,
        image_id: str,
        *,
        meta: ImageMeta | None,
        peer: PeerGrant | None = None,
        tee: Tee | None,
    ) -> bool:
        """`queue`; with `tee`, a new download starts at once beside the workers and hands its
        bytes on to it. Whether it did (False: the image was already known, or draining)."""
        if not is_valid_image_id(image_id):
            raise UnknownImage(f"No image with id {image_id!r}")
        self._check_room_in_queue(image_id)
        async with self.locks.hold(image_id):
            existing = self.records.get(image_id)
            if existing is not None and self._stale(existing):
                log.warning(
                    "%s was %s with no download: queued afresh",
                    image_id,
                    existing.state,
                    extra={"event": "stale", "image_id": image_id},
                )
                existing = images.fail(existing, error="the download ended without an outcome")
            if existing is not None and existing.state != "failed":
                return False
            self._check_room_in_queue(image_id)
            try:
                meta = meta or await self._metadata(image_id)
            except BadUpstreamAnswer as error:
                await self._refuse(existing, image_id, error)
                return False
            if meta.status != "active":
                raise ImageNotActive(f"Image {image_id} is not active (status {meta.status!r})")
            self._seq += 1
            record = images.enqueue(
                existing,
                image_id=image_id,
                seq=self._seq,
                now=time.time(),
                source=peer.url if peer is not None else None,
            )
            if record is None:
                return False
            record = images.progress(record, done=0)
            await self.db.save(record)
            self.records[image_id] = record
            teeing = (
                tee is not None
                and meta.size is not None
                and self.room.fits_now(image_id, meta.size)  # the client never waits for room
                and self.pool.adopt(image_id, record.seq)
            )
            self.downloader.hand_over(image_id, record.seq, meta, tee if teeing else None)
            if peer is not None:
                self.downloader.grant_peer(image_id, record.seq, peer)
            if not teeing:
                self.pool.submit(image_id, record.seq)
        log.info("queued %s", image_id, extra={"event": "queued", "image_id": image_id})
        return teeing

    def _stale(self, record: ImageRecord) -> bool:
        """Queued or caching, but no download owns the record (it ended without an outcome)."""
        return record.state in ("queued", "caching") and not self.pool.owns(
            record.image_id, record.seq
        )

    def _check_room_in_queue(self, image_id: str) -> None:
        existing = self.records.get(image_id)
        if existing is not None and existing.state != "failed" and not self._stale(existing):
            return  # idempotent: already queued, caching or cached
        if self.records.count("queued", "caching") >= self.settings.max_queue:
            raise QueueFull(
                f"The cache queue is full ({self.settings.max_queue} images); retry later",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )

    async def _refuse(
        self, existing: ImageRecord | None, image_id: str, error: BadUpstreamAnswer
    ) -> None:
        """Holding the id: the image fails at once with the upstream's reason."""
        self._seq += 1
        record = images.enqueue(existing, image_id=image_id, seq=self._seq, now=time.time())
        if record is None:
            return
        failed = images.fail(record, error=str(error))
        await self.db.save(failed)
        self.records[image_id] = failed
        self.metrics.failures.labels(error.reason).inc()
        self.metrics.upstream_error(error.reason)
        log.warning(
            "caching %s failed: %s",
            image_id,
            error,
            extra={"event": "failed", "image_id": image_id},
        )

    async def _metadata(self, image_id: str) -> ImageMeta:
        """The upstream's metadata; `UnknownImage` when it has no such image (other upstream
        errors reach the caller as they are)."""
        try:
            return await self.upstream.metadata(image_id)
        except ImageNotFound as error:
            raise UnknownImage(f"No image with id {image_id!r}") from error
        except UpstreamError as error:
            self.metrics.upstream_error(error.reason)  # credentials refused: counted here
            raise

    async def delete(self, image_id: str) -> None:
        """`DELETE /v2/cache/{id}`: out of cache and queue; a download in flight stops."""
        if not is_valid_image_id(image_id):
            raise UnknownImage(f"No image with id {image_id!r}")
        async with self.locks.hold(image_id):
            await to_completion(self._remove([image_id]))

    async def clear(self, target: ClearTarget) -> None:
        """`DELETE /v2/cache`: the cache, the queue, or both."""
        states = CLEARED[target]
        image_ids = [r.image_id for r in self.records.in_state(*states)]
        async with self.locks.hold(*image_ids):
            still = [i for i in image_ids if (r := self.records.get(i)) and r.state in states]
            await to_completion(self._remove(still))

    async def _remove(self, image_ids: list[str]) -> None:
        """Records, downloads, rows and files of `image_ids` (the caller holds the ids)."""
        removed = {i: r for i in image_ids if (r := self.records.pop(i, None)) is not None}
        await asyncio.gather(*(self.pool.cancel(i) for i in image_ids))
        await self.db.delete(*image_ids)
        for image_id in image_ids:
            self.room.release(image_id, notify=False)
            record = removed.get(image_id)
            await self._remove_files(image_id, record.size if record is not None else None)
            log.info("removed %s", image_id, extra={"event": "removed", "image_id": image_id})
        self.room.notify()

    async def _remove_files(self, image_id: str, size: int | None) -> None:
        """Unlink the image's files; a file being served is doomed instead (see `Pins`)."""
        if self.pins.is_pinned(image_id):
            self.pins.doom(image_id, size or 0)
            # Unseal it now: a restart before the last reader goes must not re-adopt it.
            await asyncio.to_thread(self.store.remove, image_id, cached=False, seal=True)
        else:
            await asyncio.to_thread(self.store.remove, image_id)

    async def _evict(self, victims: list[str]) -> None:
        """`Room`'s eviction: the victims' ids are held and their records already dropped."""

        async def evict() -> None:
            try:
                await self.db.delete(*victims)
                for image_id in victims:
                    await self._remove_files(image_id, None)
            finally:
                self.locks.release_all(victims)

        self.metrics.evictions.inc(len(victims))
        await to_completion(evict())

    def _unpinned(self, image_id: str) -> None:
        """The last pin of `image_id` went: a doomed file can go now."""
        self.room.notify()
        if self.pins.is_doomed(image_id):
            task = asyncio.get_running_loop().create_task(self._remove_doomed(image_id))
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def _remove_doomed(self, image_id: str) -> None:
        async with self.locks.hold(image_id):
            if self.pins.is_doomed(image_id) and not self.pins.is_pinned(image_id):
                await asyncio.to_thread(self.store.remove, image_id, partial=False)
                self.pins.reclaim(image_id)
                self.room.notify()

    def listing(self) -> dict[str, Any]:
        """`GET /v2/cache`: Glance's two keys plus the per-image reports."""
        order = self.records.queue_order()
        caching = list(self.records.in_state("caching"))
        return {
            "cached_images": [images.cached_entry(r) for r in self.records.in_state("cached")],
            "queued_images": [r.image_id for r in order],
            "caching_images": [
                images.report(
                    r,
                    image_id=r.image_id,
                    queue_position=0,
                    bytes_needed=self.room.waiting(r.image_id),
                )
                for r in sorted(caching, key=lambda r: r.seq)
            ],
            "failed_images": [
                images.report(r, image_id=r.image_id, queue_position=None)
                for r in self.records.in_state("failed")
            ],
        }

    def report(self, image_id: str) -> ImageReport:
        """`GET /v2/cache/{id}` (its queue position in O(log n))."""
        if not is_valid_image_id(image_id):
            raise UnknownImage(f"No image with id {image_id!r}")
        record = self.records.get(image_id)
        position = self.records.queue_position(image_id)
        return images.report(
            record,
            image_id=image_id,
            queue_position=position,
            bytes_needed=self.room.waiting(image_id),
        )

    # --- serving ---------------------------------------------------------------------------
    def pin(
        self, image_id: str, *, read: bool = True
    ) -> tuple[Path, ImageRecord, Callable[[], None]] | None:
        """A cached image for serving: its file, record and a release callback, or None.

        A `read` (GET, not HEAD) counts a hit or a miss; the image is never evicted, and its
        file never removed, until `release()` is called.
        """
        record = self.records.get(image_id)
        if record is None or record.state != "cached":
            if read:
                self.metrics.misses.inc()
            return None
        release = self.pins.pin(image_id)
        if read:
            record = images.hit(record, now=time.time())
            self.records[image_id] = record
            self.db.save_soon(record)
            self.metrics.hits.inc()
        return self.store.image_path(image_id), record, release

    async def open_cached(self, image_id: str, *, read: bool = True) -> CachedFile | None:
        """A cached image opened and pinned for serving, or None when it is not cached.

        The file is opened with ``O_NOFOLLOW`` and must be a regular file of the recorded size:
        anything else (a symlink swapped in, a truncated or replaced file) is never served; the
        image is dropped from the cache (the link itself unlinked, never its target) and the
        request is answered as a miss.
        """
        found = self.pin(image_id, read=False)
        if found is None:
            if read:
                self.metrics.misses.inc()
            return None
        _, record, unpin = found
        try:
            handle = await asyncio.to_thread(self.store.open_image, image_id)
        except OSError as error:
            unpin()
            await self._drop_broken(image_id, f"cannot be served: {error}", read=read)
            return None
        info = os.fstat(handle.fileno())
        if info.st_size != record.size:
            handle.close()
            unpin()
            await self._drop_broken(
                image_id, f"holds {info.st_size} bytes, not {record.size}", read=read
            )
            return None
        if read:
            record = images.hit(record, now=time.time())
            self.records[image_id] = record
            self.db.save_soon(record)
            self.metrics.hits.inc()
        return CachedFile(
            handle=handle,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            checksum=record.checksum,
            unpin=unpin,
        )

    async def _drop_broken(self, image_id: str, problem: str, *, read: bool) -> None:
        """A cached image whose file is not what was committed: out of the cache."""
        log.warning(
            "cached file of %s %s; dropping it from the cache",
            image_id,
            problem,
            extra={"event": "broken_file", "image_id": image_id},
        )
        if read:
            self.metrics.misses.inc()
        async with self.locks.hold(image_id):
            record = self.records.get(image_id)
            if record is not None and record.state == "cached":
                await to_completion(self._remove([image_id]))

    def pinned(self) -> frozenset[str]:
        """The images being served right now (never evicted)."""
        return self.pins.pinned()

    async def read_through(self, image_id: str, *, read: bool = True) -> ReadThrough:
        """A miss: metadata and bytes streamed from the upstream. A `read` (GET, not HEAD)
        with ``cache_on_read`` also caches the image, from the same upstream stream when the
        image is new here, its size known and its room free now (see tee.py)."""
        meta = await self._metadata(image_id)
        if meta.status != "active":
            raise UnknownImage(f"Image {image_id} has no data (status {meta.status!r})")
        direct = ReadThrough(meta=meta, open=lambda: self.upstream.open(image_id, 0))
        if not (read and self.settings.cache_on_read):
            return direct
        tee = Tee(client_timeout=self.settings.stall_timeout)
        try:
            teeing = await self._queue(image_id, meta=meta, tee=tee)
        except (CacheError, UpstreamError) as error:
            log.warning("read-through queue of %s failed: %s", image_id, error)
            return direct
        if not teeing:
            return direct
        return ReadThrough(meta=meta, open=lambda: self._read_along(image_id, tee))

    @asynccontextmanager
    async def _read_along(self, image_id: str, tee: Tee) -> AsyncIterator[ByteStream]:
        """The bytes of the download the client reads along with (or, `Detached`, its own)."""
        try:
            await tee.wait_started()
        except Detached:
            async with self.upstream.open(image_id, 0) as stream:
                yield stream
            return
        try:
            yield ChunkStream(offset=0, source=tee.chunks)
        finally:
            tee.leave()

    # --- upkeep (Glance 33's prune, clean, nodes) ------------------------------------------
    def holds(self, image_id: str) -> bool:
        """Whether the image is cached here."""
        record = self.records.get(image_id)
        return record is not None and record.state == "cached"

    async def check_upstream(self, image_id: str) -> None:
        """`UnknownImage` when the upstream does not know the image, an `UpstreamError` when it
        cannot say."""
        await self._metadata(image_id)

    async def prune(self) -> tuple[int, int]:
        """Glance 33's prune: evict LRU images (not those being served) until the cache is
        within ``max_size``; (images, bytes) removed."""
        cached = {r.image_id: r for r in self.records.in_state("cached")}
        victims = prune_victims(
            cached=(
                Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0) for r in cached.values()
            ),
            pinned=self.pinned(),
            used=self.records.cached_bytes,
            max_size=self.settings.max_size,
        )
        freed = sum(cached[v].size or 0 for v in victims)
        for image_id in victims:
            await self.delete(image_id)
        return len(victims), freed

    async def clean(self) -> int:
        """Glance 33's clean: files that failed verification and partial downloads no download
        owns that were not written for ``stall_timeout``; how many files went."""
        removed = await asyncio.to_thread(
            clean_directory,
            invalid=self.store.invalid,
            incomplete=self.store.incomplete,
            live=self.live_downloads(),
            stalled_before=time.time() - self.settings.stall_timeout,
        )
        await asyncio.to_thread(self.store.prune_invalid)  # counts what is left in invalid/
        return removed

    # --- image metadata, as the upstream shows it ------------------------------------------
    async def image_document(self, image_id: str) -> Document:
        """``GET /v2/images/{id}``: the upstream's document of the image."""
        return await self.index.show(image_id)

    async def image_documents(self, query: Query) -> Document:
        """``GET /v2/images``: the upstream's listing for `query`."""
        return await self.index.index(query)

    def live_downloads(self) -> set[str]:
        """Ids whose partial files a download owns (queued or caching)."""
        return {r.image_id for r in self.records.in_state("queued", "caching")}
