"""`Downloader`: the worker pool's job — one queued image, its retries, and its commit.

`run(image_id, seq)` makes attempts (`fetching.fetch`) until the image is cached, fails
permanently, runs out of retries, or its record changes under it (deleted or re-queued: `seq`
no longer matches). Each attempt reserves room first (`Room`): while it waits for room the
download is off duty (its worker runs other downloads), and no room within
``room_wait_timeout`` fails it with ``NoRoom`` (a later `PUT` tries again).

The commit — the rename into ``images/`` of the very file that was hashed, the record turning
``cached`` and its row saved — runs holding the image id (`IdLocks`) and to completion even
when the download is cancelled, so a `DELETE` either comes before it (and the download never
commits) or after it.

Every download ends (SPEC §2.10): an exception no layer translated into a `FetchError` (a bug,
a `RecursionError`, ...) fails the image with reason ``internal_error`` and the exception's
name, instead of leaving it ``caching``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, TypeVar

from imagecache.agent.cache.db import Database
from imagecache.agent.cache.errors import NoRoom
from imagecache.agent.cache.fetching import (
    Fetched,
    PermanentFetchError,
    TransientFetchError,
    fetch,
    hashing_pool,
    upstream_errors,
)
from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.peer_fill import (
    UNUSABLE_MESSAGES,
    PeerFailed,
    PeerGrant,
    fill_from_peer,
    peer_unusable,
)
from imagecache.agent.cache.pins import Pins
from imagecache.agent.cache.room import OnWait, Room
from imagecache.agent.cache.store import Store
from imagecache.agent.cache.tee import Tee, TeeUpstream
from imagecache.agent.metrics import AgentMetrics
from imagecache.agent.settings import AgentSettings
from imagecache.agent.upstream.port import ImageMeta, Upstream
from imagecache.core import images
from imagecache.core.backoff import backoff_delay
from imagecache.core.eviction import DoesNotFit
from imagecache.core.images import ImageRecord
from imagecache.core.table import ImageTable

log = logging.getLogger("imagecache.agent")

T = TypeVar("T")


async def to_completion(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.gather(task, return_exceptions=True)
        raise


class Superseded(Exception):
    """The record changed while the attempt ran (deleted or re-queued): nothing to commit."""


class Downloader:
    """Runs downloads for `ImageCache`, sharing its records, locks, pins and room."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        upstream: Upstream,
        store: Store,
        db: Database,
        records: ImageTable,
        metrics: AgentMetrics,
        locks: IdLocks,
        pins: Pins,
        room: Room,
        off_duty: OnWait,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.store = store
        self.db = db
        self.records = records
        self.metrics = metrics
        self.locks = locks
        self.pins = pins
        self.room = room
        self.off_duty = off_duty
        self._handed: dict[tuple[str, int], ImageMeta] = {}
        self._grants: dict[tuple[str, int], PeerGrant] = {}
        self._tees: dict[tuple[str, int], Tee] = {}
        self.hashing = hashing_pool()
        """Threads for digests, shared by every download (sized by cores, not workers)."""

    def close(self) -> None:
        """Stop the hashing threads (after the downloads stopped)."""
        self.hashing.shutdown(wait=False, cancel_futures=True)

    def hand_over(self, image_id: str, seq: int, meta: ImageMeta, tee: Tee | None = None) -> None:
        """The metadata the `PUT` just read, for this download's first attempt.

        Later attempts (after a transient failure) and downloads resumed after a restart ask
        the upstream again: the image may have changed upstream meanwhile. With `tee` (a
        read-through client waiting), the first attempt hands its chunks on to that client
        (see tee.py); later attempts do not.
        """
        self._handed[(image_id, seq)] = meta
        if tee is not None:
            self._tees[(image_id, seq)] = tee

    def grant_peer(self, image_id: str, seq: int, grant: PeerGrant) -> None:
        """The peer a `PUT` named and the credential to present to it (memory only)."""
        self._grants[(image_id, seq)] = grant

    def current(self, image_id: str, seq: int) -> ImageRecord | None:
        record = self.records.get(image_id)
        if record is None or record.seq != seq or record.state not in ("queued", "caching"):
            return None
        return record

    async def run(self, image_id: str, seq: int) -> None:
        """One queued image, with retries; the worker pool runs this."""
        attempt = 0
        started = time.monotonic()
        try:
            while (record := self.current(image_id, seq)) is not None:
                attempt += 1
                try:
                    await self._attempt(record)
                except Superseded:
                    return
                except TransientFetchError as error:
                    self.metrics.failures.labels(error.reason).inc()
                    self.metrics.upstream_error(error.reason)
                    if attempt >= self.settings.retries:
                        await self._fail(image_id, seq, f"{error} (after {attempt} attempts)")
                        return
                    self._update(
                        image_id, seq, functools.partial(images.retry_later, error=str(error))
                    )
                    delay = backoff_delay(
                        failures=attempt,
                        base=self.settings.retry_backoff,
                        cap=300.0,
                        jitter=random.random(),
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
                    self.metrics.failures.labels(error.reason).inc()
                    self.metrics.upstream_error(error.reason)
                    await self._fail(image_id, seq, str(error))
                    return
                except Exception as error:  # untranslated: a bug, never a reason to hang
                    log.exception(
                        "download of %s failed unexpectedly",
                        image_id,
                        extra={"event": "crashed", "image_id": image_id},
                    )
                    self.metrics.failures.labels("internal_error").inc()
                    text = f"internal error: {type(error).__name__}: {error}"
                    await self._fail(image_id, seq, text[:300])
                    return
                self.metrics.duration.observe(time.monotonic() - started)
                return
        finally:
            self.room.release(image_id)  # no other download of this id runs meanwhile
            self._handed.pop((image_id, seq), None)
            self._grants.pop((image_id, seq), None)
            tee = self._tees.pop((image_id, seq), None)
            if tee is not None:  # never attempted (superseded): the client streams on its own
                tee.detach()

    async def _attempt(self, record: ImageRecord) -> None:
        tee = self._tees.pop((record.image_id, record.seq), None)
        if tee is None:
            await self._attempt_with(record, None)
            return
        try:
            await self._attempt_with(record, tee)
        except BaseException as error:
            tee.finish(error)
            raise

    async def _attempt_with(self, record: ImageRecord, tee: Tee | None) -> None:
        """One attempt; with `tee`, a read-through client takes the bytes along."""
        image_id, seq = record.image_id, record.seq
        meta = self._handed.pop((image_id, seq), None)
        if meta is None:
            with upstream_errors():
                meta = await self.upstream.metadata(image_id)
        if meta.status != "active":
            raise PermanentFetchError(
                f"image is not active upstream (status {meta.status!r})", reason="not_active"
            )
        if tee is not None and (meta.size is None or not self.room.fits_now(image_id, meta.size)):
            tee.detach()  # the client does not wait for room: it streams on its own
            tee = None
        if meta.size is not None:
            try:
                await self.room.reserve(image_id, meta.size, on_wait=self.off_duty)
            except DoesNotFit as error:
                raise PermanentFetchError(str(error), reason="too_large") from error
            except NoRoom as error:
                raise PermanentFetchError(f"NoRoom: {error}", reason="no_room") from error
        if self.current(image_id, seq) is None:
            raise Superseded(image_id)
        # A client reading along needs every byte from the first: no resume then.
        resumed = (
            0 if tee is not None else await asyncio.to_thread(self.store.partial_size, image_id)
        )
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
        counter = [self.metrics.downloaded]

        def on_progress(done: int) -> None:
            counter[0].inc(max(0, done - last[0]))
            last[0] = done
            self._update(image_id, seq, lambda r: images.progress(r, done=done))

        async def reserve(total: int) -> None:
            """An image of unknown size: room for `total` bytes, else no more bytes (it holds
            its worker and its upstream connection meanwhile: waits at most `stall_timeout`)."""
            try:
                await self.room.reserve(image_id, total, within=self.settings.stall_timeout)
            except DoesNotFit as error:
                raise PermanentFetchError(str(error), reason="too_large") from error
            except NoRoom as error:
                raise TransientFetchError(f"NoRoom: {error}", reason="no_room") from error

        source = TeeUpstream(self.upstream, tee) if tee is not None else None

        async def commit(handle: BinaryIO, fetched: Fetched) -> None:
            await to_completion(self._commit(image_id, seq, handle, fetched))
            if tee is not None and source is not None:  # verified and committed: the last chunk
                tee.finish(last=source.last)

        async def download(origin: Upstream, resume_from: int) -> Fetched:
            return await fetch(
                upstream=origin,
                store=self.store,
                image_id=image_id,
                meta=meta,
                max_size=self.settings.max_size,
                on_progress=on_progress,
                resume_from=resume_from,
                commit=commit,
                reserve=reserve,
                hashing=self.hashing,
            )

        if record.source is not None:  # fleet fill: a peer first, the upstream on any failure
            grant = self._grants.get((image_id, seq))
            unusable = peer_unusable(record, grant, meta)
            try:
                if unusable is not None:
                    message = UNUSABLE_MESSAGES[unusable].format(url=record.source)
                    raise PeerFailed(unusable, message)
                assert grant is not None
                counter[0] = self.metrics.peer_downloaded
                await fill_from_peer(
                    grant,
                    stall_timeout=self.settings.stall_timeout,
                    download=lambda peer: download(peer, resumed),
                )
                return
            except PeerFailed as failure:
                await self._fall_back(image_id, seq, failure)
            counter[0], last[0], resumed = self.metrics.downloaded, 0, 0
        await download(source or self.upstream, resumed)

    async def _fall_back(self, image_id: str, seq: int, failure: PeerFailed) -> None:
        """The peer is out for this download: recorded (with why), counted, and forgotten."""
        self.metrics.peer_fallbacks.labels(failure.reason).inc()
        self._grants.pop((image_id, seq), None)
        self._update(image_id, seq, lambda r: images.fall_back(r, reason=str(failure)))
        current = self.current(image_id, seq)
        if current is None:
            raise Superseded(image_id)
        await self.db.save(current)
        log.warning(
            "%s; downloading %s from the upstream from byte 0",
            failure,
            image_id,
            extra={"event": "peer_fallback", "image_id": image_id, "reason": failure.reason},
        )

    async def _commit(self, image_id: str, seq: int, handle: BinaryIO, fetched: Fetched) -> None:
        """Holding the id: the verified file goes into ``images/``, the record turns cached."""
        async with self.locks.hold(image_id):
            if self.current(image_id, seq) is None:
                raise Superseded(image_id)
            await asyncio.to_thread(self._commit_file, image_id, handle, fetched)
            self.pins.reclaim(image_id)  # a doomed file of the same id was just replaced
            finished = images.finish(
                self.records[image_id], size=fetched.size, checksum=fetched.md5, now=time.time()
            )
            self.records[image_id] = finished
            self.metrics.cached_bytes.inc(fetched.size)  # counted as it is listed cached
            self.room.release(image_id)
            await self.db.save(finished)
        log.info(
            "cached %s (%d bytes)",
            image_id,
            fetched.size,
            extra={"event": "cached", "image_id": image_id},
        )

    def _commit_file(self, image_id: str, handle: BinaryIO, fetched: Fetched) -> None:
        """Rename only the file that was written and hashed (same inode), never another (nor a
        link to it: ``lstat``)."""
        try:
            on_disk = os.lstat(self.store.partial_path(image_id))
        except FileNotFoundError as error:
            raise TransientFetchError(
                "partial file vanished before commit", reason="partial_vanished"
            ) from error
        written = os.fstat(handle.fileno())
        if (on_disk.st_dev, on_disk.st_ino) != (written.st_dev, written.st_ino):
            raise TransientFetchError(
                "partial file was replaced before commit", reason="partial_replaced"
            )
        self.store.commit(image_id, handle, seal=fetched.seal)

    def _update(self, image_id: str, seq: int, change: Callable[[ImageRecord], Any]) -> None:
        record = self.current(image_id, seq)
        if record is not None:
            self.records[image_id] = change(record)

    async def _fail(self, image_id: str, seq: int, error: str) -> None:
        async with self.locks.hold(image_id):
            record = self.current(image_id, seq)
            if record is None:
                return
            if record.state == "queued":
                record = images.start(
                    record, now=time.time(), size=record.size, resumed_bytes=record.bytes
                )
            failed = images.progress(images.fail(record, error=error), done=0)
            self.records[image_id] = failed
            self.room.release(image_id)
            # Give the space back (a file that failed verification is already in invalid/).
            await asyncio.to_thread(self.store.remove, image_id, cached=False)
            await self.db.save(failed)
        log.warning(
            "caching %s failed: %s",
            image_id,
            error,
            extra={"event": "failed", "image_id": image_id},
        )
