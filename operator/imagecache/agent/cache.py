"""`ImageCache`: the agent's service layer — queue, download, evict, serve, report.

Holds the live `ImageRecord`s (persisted through `Database`), the `WorkerPool`, the `Store` and
the `Upstream`; views call it and never touch those directly. State changes go through the pure
functions of `imagecache.core.images`; eviction choices through `imagecache.core.eviction`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from imagecache.agent.db import Database
from imagecache.agent.errors import BadRequest, NotFound, UpstreamUnavailable
from imagecache.agent.fetching import PermanentFetchError, TransientFetchError, fetch
from imagecache.agent.metrics import AgentMetrics, failure_reason
from imagecache.agent.settings import AgentSettings
from imagecache.agent.store import Store
from imagecache.agent.upstreams import (
    ImageMeta,
    ImageNotFound,
    TransientUpstreamError,
    Upstream,
    UpstreamError,
)
from imagecache.agent.workers import WorkerPool
from imagecache.core import images
from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims
from imagecache.core.ids import is_valid_image_id
from imagecache.core.images import ImageRecord, State
from imagecache.core.recovery import plan_recovery
from imagecache.core.table import ImageTable
from imagecache.core.wire import ImageReport

log = logging.getLogger("imagecache.agent")

ClearTarget = Literal["all", "cache", "queue"]


class ImageCache:
    """One cache directory's images, their queue and their downloads."""

    def __init__(self, settings: AgentSettings, upstream: Upstream, metrics: AgentMetrics) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.store = Store(settings.cache_dir)
        self.db = Database(self.store.database)
        self.records = ImageTable()
        self.pool = WorkerPool(settings.workers, self._download, metrics.worker_restarts.inc)
        self._seq = 0
        self._putting: dict[str, asyncio.Future[None]] = {}
        self._pins: Counter[str] = Counter()
        self._reserved: dict[str, int] = {}
        metrics.bind(
            cache_bytes=lambda: float(self.records.cached_bytes),
            cache_images=lambda: float(self.records.count("cached")),
            queue_length=lambda: float(self.records.count("queued", "caching")),
            in_flight=lambda: float(len(self.pool.running)),
        )

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the layout, load and repair the records, start the workers, resume the queue."""
        await asyncio.to_thread(self.store.create)
        stored = await self.db.open()
        image_files, partial_files = await asyncio.to_thread(self.store.listing)
        plan = plan_recovery(stored, image_files=image_files, partial_files=partial_files)
        for record in plan.records:
            self.records[record.image_id] = record
            self._seq = max(self._seq, record.seq)
        for name in plan.stray_images:
            await asyncio.to_thread(self.store.remove, name, partial=False)
        for name in plan.stray_partials:
            await asyncio.to_thread(self.store.remove, name, cached=False)
        if plan.dropped:
            await self.db.delete(*plan.dropped)
        if plan.changed:
            await self.db.save(*plan.changed)
        self.pool.start()
        for record in images.queue_order(self.records.in_state("queued")):
            self.pool.submit(record.image_id, record.seq)
        log.info("cache opened", extra={"event": "opened", "images": len(self.records)})

    async def close(self) -> None:
        await self.pool.stop()
        await self.db.close()
        await self.upstream.close()

    def ready(self) -> dict[str, bool]:
        return {"database": self.db.is_open, "workers": self.pool.alive()}

    # --- the Glance cache API --------------------------------------------------------------
    async def queue(self, image_id: str) -> None:
        """`PUT /v2/cache/{id}`: durably queued on return (idempotent)."""
        if not is_valid_image_id(image_id):
            raise NotFound(f"No image with id {image_id!r}")
        while (busy := self._putting.get(image_id)) is not None:
            await asyncio.shield(busy)  # a concurrent PUT of the same id: share its outcome
        existing = self.records.get(image_id)
        if existing is not None and existing.state != "failed":
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._putting[image_id] = done
        try:
            meta = await self._metadata(image_id)
            if meta.status != "active":
                raise BadRequest(f"Image {image_id} is not active (status {meta.status!r})")
            self._seq += 1
            record = images.enqueue(
                self.records.get(image_id), image_id=image_id, seq=self._seq, now=time.time()
            )
            if record is None:
                return
            record = images.progress(record, done=0)
            await self.db.save(record)
            self.records[image_id] = record
            self.pool.submit(image_id, record.seq)
            log.info("queued %s", image_id, extra={"event": "queued", "image_id": image_id})
        finally:
            del self._putting[image_id]
            done.set_result(None)

    async def _metadata(self, image_id: str) -> ImageMeta:
        try:
            return await self.upstream.metadata(image_id)
        except ImageNotFound as error:
            raise NotFound(f"No image with id {image_id!r}") from error
        except TransientUpstreamError as error:
            raise UpstreamUnavailable(f"Upstream unavailable: {error}") from error
        except UpstreamError as error:  # e.g. our upstream token is refused: fixable, retry
            raise UpstreamUnavailable(f"Upstream refused image {image_id}: {error}") from error

    async def delete(self, image_id: str) -> None:
        """`DELETE /v2/cache/{id}`: out of cache and queue; a download in flight stops."""
        if not is_valid_image_id(image_id):
            raise NotFound(f"No image with id {image_id!r}")
        await self._forget([image_id])

    async def clear(self, target: ClearTarget) -> None:
        """`DELETE /v2/cache`: the cache, the queue, or both."""
        states: dict[ClearTarget, tuple[State, ...]] = {
            "all": ("cached", "queued", "caching"),
            "cache": ("cached",),
            "queue": ("queued", "caching"),
        }
        await self._forget([r.image_id for r in self.records.in_state(*states[target])])

    async def _forget(self, image_ids: list[str]) -> None:
        for image_id in image_ids:
            self.records.pop(image_id, None)
        await asyncio.gather(*(self.pool.cancel(i) for i in image_ids))
        await self.db.delete(*image_ids)
        for image_id in image_ids:
            if not self._pins[image_id]:
                await asyncio.to_thread(self.store.remove, image_id)
            log.info("removed %s", image_id, extra={"event": "removed", "image_id": image_id})

    def listing(self) -> dict[str, Any]:
        """`GET /v2/cache`: Glance's two keys plus the per-image reports."""
        waiting = list(self.records.in_state("queued", "caching"))
        positions = images.queue_positions(waiting)
        order = images.queue_order(waiting)
        return {
            "cached_images": [images.cached_entry(r) for r in self.records.in_state("cached")],
            "queued_images": [r.image_id for r in order],
            "caching_images": [
                images.report(r, image_id=r.image_id, queue_position=positions.get(r.image_id))
                for r in order
                if r.state == "caching"
            ],
            "failed_images": [
                images.report(r, image_id=r.image_id, queue_position=None)
                for r in self.records.in_state("failed")
            ],
        }

    def report(self, image_id: str) -> ImageReport:
        """`GET /v2/cache/{id}`."""
        if not is_valid_image_id(image_id):
            raise NotFound(f"No image with id {image_id!r}")
        record = self.records.get(image_id)
        position = None
        if record is not None and record.state in ("queued", "caching"):
            waiting = self.records.in_state("queued", "caching")
            position = images.queue_positions(waiting).get(image_id)
        return images.report(record, image_id=image_id, queue_position=position)

    # --- serving ---------------------------------------------------------------------------
    def pin(
        self, image_id: str, *, read: bool = True
    ) -> tuple[Path, ImageRecord, Callable[[], None]] | None:
        """A cached image for serving: its file, record and a release callback, or None.

        A `read` (GET, not HEAD) counts a hit or a miss; the image is never evicted until
        `release()` is called.
        """
        record = self.records.get(image_id)
        if record is None or record.state != "cached":
            if read:
                self.metrics.misses.inc()
            return None
        self._pins[image_id] += 1
        if read:
            record = images.hit(record, now=time.time())
            self.records[image_id] = record
            self.db.save_soon(record)
            self.metrics.hits.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._pins[image_id] -= 1
                if self._pins[image_id] <= 0:
                    del self._pins[image_id]

        return self.store.image_path(image_id), record, release

    def pinned(self) -> frozenset[str]:
        """The images being served right now (never evicted)."""
        return frozenset(self._pins)

    async def read_through(self, image_id: str, *, read: bool = True) -> ImageMeta:
        """A miss: metadata for streaming from upstream; a `read` (GET, not HEAD) also queues
        the image when `cache_on_read`."""
        meta = await self._metadata(image_id)
        if meta.status != "active":
            raise NotFound(f"Image {image_id} has no data (status {meta.status!r})")
        if read and self.settings.cache_on_read:
            try:
                await self.queue(image_id)
            except (NotFound, BadRequest, UpstreamUnavailable) as error:
                log.warning("read-through queue of %s failed: %s", image_id, error)
        return meta

    # --- downloading -----------------------------------------------------------------------
    def _current(self, image_id: str, seq: int) -> ImageRecord | None:
        record = self.records.get(image_id)
        if record is None or record.seq != seq or record.state not in ("queued", "caching"):
            return None
        return record

    async def _download(self, image_id: str, seq: int) -> None:
        """One queued image, with retries; the worker pool runs this."""
        attempt = 0
        started = time.monotonic()
        try:
            while (record := self._current(image_id, seq)) is not None:
                attempt += 1
                try:
                    await self._attempt(record)
                except TransientFetchError as error:
                    self.metrics.failures.labels(failure_reason(str(error))).inc()
                    if attempt >= self.settings.retries:
                        await self._fail(image_id, seq, f"{error} (after {attempt} attempts)")
                        return
                    self._update(
                        image_id, seq, functools.partial(images.retry_later, error=str(error))
                    )
                    delay = images.retry_delay(
                        attempt, base=self.settings.retry_backoff, cap=300.0, jitter=random.random()
                    )
                    log.warning(
                        "download of %s failed (%s); retrying in %.2fs",
                        image_id,
                        error,
                        delay,
                        extra={"event": "retrying", "image_id": image_id},
                    )
                    await asyncio.sleep(delay)
                    continue
                except PermanentFetchError as error:
                    self.metrics.failures.labels(failure_reason(str(error))).inc()
                    await self._fail(image_id, seq, str(error))
                    return
                self.metrics.duration.observe(time.monotonic() - started)
                return
        finally:
            self._reserved.pop(image_id, None)

    async def _attempt(self, record: ImageRecord) -> None:
        image_id, seq = record.image_id, record.seq
        try:
            meta = await self.upstream.metadata(image_id)
        except ImageNotFound as error:
            raise PermanentFetchError("image not found upstream") from error
        except TransientUpstreamError as error:
            raise TransientFetchError(str(error)) from error
        except UpstreamError as error:
            raise PermanentFetchError(str(error)) from error
        if meta.status != "active":
            raise PermanentFetchError(f"image is not active upstream (status {meta.status!r})")
        if meta.size is not None:
            await self._make_room(image_id, meta.size)
        resumed = await asyncio.to_thread(self.store.partial_size, image_id)
        self._update(
            image_id,
            seq,
            lambda r: images.start(r, now=time.time(), size=meta.size, resumed_bytes=resumed),
        )
        current = self.records.get(image_id)
        if current is not None:
            self.db.save_soon(current)
            log.info(
                "%s %s (attempt %d)",
                "resuming" if resumed else "downloading",
                image_id,
                current.attempts,
                extra={"event": "resumed" if resumed else "started", "image_id": image_id},
            )
        last = [resumed]

        def on_progress(done: int) -> None:
            self.metrics.downloaded.inc(max(0, done - last[0]))
            last[0] = done
            self._update(image_id, seq, lambda r: images.progress(r, done=done))

        result = await fetch(
            upstream=self.upstream,
            store=self.store,
            image_id=image_id,
            meta=meta,
            max_size=self.settings.max_size,
            on_progress=on_progress,
            resume_from=resumed,
        )
        self._update(
            image_id,
            seq,
            lambda r: images.finish(r, size=result.size, checksum=result.md5, now=time.time()),
        )
        finished = self.records.get(image_id)
        if finished is not None and finished.seq == seq:
            await self.db.save(finished)
            log.info(
                "cached %s (%d bytes)",
                image_id,
                result.size,
                extra={"event": "cached", "image_id": image_id},
            )

    async def _make_room(self, image_id: str, size: int) -> None:
        used = self.records.cached_bytes + sum(
            v for k, v in self._reserved.items() if k != image_id
        )
        try:
            victims = choose_victims(
                cached=(
                    Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0)
                    for r in self.records.in_state("cached")
                ),
                pinned=set(self._pins),
                used=used,
                incoming=size,
                max_size=self.settings.max_size,
            )
        except DoesNotFit as error:
            raise PermanentFetchError(str(error)) from error
        self._reserved[image_id] = size
        if victims:
            log.info("evicting %s", ", ".join(victims), extra={"event": "evicted"})
            self.metrics.evictions.inc(len(victims))
            await self._forget(victims)

    def _update(self, image_id: str, seq: int, change: Any) -> None:
        record = self._current(image_id, seq)
        if record is not None:
            self.records[image_id] = change(record)

    async def _fail(self, image_id: str, seq: int, error: str) -> None:
        record = self._current(image_id, seq)
        if record is None:
            return
        if record.state == "queued":
            record = images.start(
                record, now=time.time(), size=record.size, resumed_bytes=record.bytes
            )
        failed = images.fail(record, error=error)
        self.records[image_id] = failed
        # Give the space back (a file that failed verification is already in invalid/).
        await asyncio.to_thread(self.store.remove, image_id, cached=False)
        failed = images.progress(failed, done=0)
        self.records[image_id] = failed
        await self.db.save(failed)
        log.warning(
            "caching %s failed: %s",
            image_id,
            error,
            extra={"event": "failed", "image_id": image_id},
        )
