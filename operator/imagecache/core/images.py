"""The per-image state machine and the report the agent gives about an image (SPEC §2.5).

States: ``queued → caching → cached`` with ``failed`` reachable from ``caching`` (and from
``queued`` when a check before download refuses the image). ``absent`` is never stored: it is
what the report says about an image the agent does not know. Every transition is a pure function
from an `ImageRecord` (and ``now``) to a new one; the agent persists what they return.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from imagecache.core.wire import CachedEntry, ImageReport, image_report

State = Literal["queued", "caching", "cached", "failed"]


@dataclass(frozen=True)
class ImageRecord:
    """What the agent knows about one image; `seq` orders the FIFO queue."""

    image_id: str
    state: State
    seq: int
    size: int | None = None
    bytes: int = 0
    attempts: int = 0
    error: str | None = None
    checksum: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    cached_at: float | None = None
    last_accessed: float | None = None
    hits: int = 0
    source: str | None = None
    """The peer agent's base URL the bytes are taken from (``X-Image-Cache-Source``), None for
    the upstream; cleared when the download falls back to the upstream."""
    fallback: str | None = None
    """Why the last peer download fell back to the upstream (or why the hint was ignored)."""


def enqueue(
    existing: ImageRecord | None,
    *,
    image_id: str,
    seq: int,
    now: float,
    source: str | None = None,
) -> ImageRecord | None:
    """A `PUT`: the new queued record, or None when nothing must change (idempotent).

    Queued, caching and cached images are left alone (a `source` hint then changes nothing);
    an unknown or failed image gets a fresh attempt at the back of the queue (attempt counter
    and error reset), from the peer `source` when one is given.
    """
    if existing is not None and existing.state != "failed":
        return None
    return ImageRecord(image_id=image_id, state="queued", seq=seq, queued_at=now, source=source)


def fall_back(record: ImageRecord, *, reason: str) -> ImageRecord:
    """The peer failed (or cannot be used): the bytes come from the upstream, from byte 0."""
    return replace(record, source=None, fallback=reason, bytes=0)


def start(record: ImageRecord, *, now: float, size: int | None, resumed_bytes: int) -> ImageRecord:
    """A worker picks the image up (again): one more attempt, progress from the resumed offset."""
    return replace(
        record,
        state="caching",
        attempts=record.attempts + 1,
        started_at=now,
        size=size,
        bytes=resumed_bytes,
        error=None,
    )


def progress(record: ImageRecord, *, done: int) -> ImageRecord:
    """Bytes now in ``incomplete/`` for a caching image."""
    return replace(record, bytes=done)


def retry_later(record: ImageRecord, *, error: str) -> ImageRecord:
    """A transient failure with attempts left: still caching, the error shown meanwhile."""
    return replace(record, error=error)


def finish(record: ImageRecord, *, size: int, checksum: str | None, now: float) -> ImageRecord:
    """The image is verified and in place."""
    return replace(
        record,
        state="cached",
        size=size,
        bytes=size,
        checksum=checksum,
        cached_at=now,
        last_accessed=now,
        error=None,
    )


def fail(record: ImageRecord, *, error: str) -> ImageRecord:
    """A permanent failure (or transient ones past the retry budget): kept with its reason."""
    return replace(record, state="failed", error=error)


def hit(record: ImageRecord, *, now: float) -> ImageRecord:
    """The cached image was served once more."""
    return replace(record, hits=record.hits + 1, last_accessed=now)


def recover(record: ImageRecord) -> ImageRecord | None:
    """After a restart: caching images go back to the queue; None drops a record."""
    if record.state == "caching":
        return replace(record, state="queued", error=None)
    return record


def percent(done: int, size: int | None) -> int:
    """Whole percent done, 0..100 (100 only when every byte is there)."""
    if not size:
        return 0
    if done >= size:
        return 100
    return min(99, max(0, done * 100 // size))


def queue_order(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Glance's ``queued_images`` order: downloading images first, then the waiting FIFO."""
    active = [r for r in records if r.state in ("queued", "caching")]
    return sorted(active, key=lambda r: (r.state != "caching", r.seq))


def queue_positions(records: Iterable[ImageRecord]) -> dict[str, int]:
    """Position of each queued or caching image: 0 while caching, else its place in the FIFO."""
    positions: dict[str, int] = {}
    waiting = 0
    for record in queue_order(records):
        if record.state == "caching":
            positions[record.image_id] = 0
        else:
            positions[record.image_id] = waiting
            waiting += 1
    return positions


def report(
    record: ImageRecord | None,
    *,
    image_id: str,
    queue_position: int | None,
    bytes_needed: int | None = None,
) -> ImageReport:
    """The per-image report; an unknown image is ``absent``. `bytes_needed` (not None while
    the download waits for room) is shown as ``waiting_for_room`` and ``bytes_needed``."""
    if record is None:
        return image_report(image_id, "absent")
    waiting = record.state in ("queued", "caching")
    return ImageReport(
        image_id=record.image_id,
        state=record.state,
        size=record.size,
        bytes=record.bytes,
        percent=percent(record.bytes, record.size),
        queue_position=queue_position if waiting else None,
        attempts=record.attempts,
        error=record.error,
        queued_at=record.queued_at,
        started_at=record.started_at,
        cached_at=record.cached_at,
        source=record.source or "upstream",
        peer_fallback=record.fallback,
        waiting_for_room=waiting and bytes_needed is not None,
        bytes_needed=bytes_needed if waiting else None,
    )


def cached_entry(record: ImageRecord) -> CachedEntry:
    """A cached record as Glance lists it."""
    cached_at = record.cached_at or 0.0
    return CachedEntry(
        image_id=record.image_id,
        hits=record.hits,
        last_accessed=record.last_accessed or cached_at,
        last_modified=cached_at,
        size=record.size or 0,
        id=record.image_id,
        checksum=record.checksum,
        source=record.source or "upstream",
    )
