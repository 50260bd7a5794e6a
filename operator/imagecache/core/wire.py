"""The agent ↔ operator wire contract: what ``GET /v2/cache`` and ``GET /v2/cache/{id}`` carry.

One definition for both sides: the agent builds these documents (`imagecache.core.images`), the
operator reads them (`imagecache.core.status`). The keys are SPEC §2.4/§2.5's; the agent's OpenAPI
document (``agent/openapi.json``) describes the same shapes for other clients.

Readers must not trust a document because it type-checks: it arrived over the network, so the
operator reads every field with ``.get`` and tolerates missing ones (an older agent, a Glance).
"""

from __future__ import annotations

from typing import Literal, TypedDict

ImageState = Literal["queued", "caching", "cached", "failed", "absent"]
"""An image's state as reported; ``absent`` means the agent does not know the image."""


class ImageReport(TypedDict):
    """`GET /v2/cache/{id}`, and each entry of ``caching_images`` / ``failed_images``."""

    image_id: str
    state: ImageState
    size: int | None
    bytes: int
    percent: int
    queue_position: int | None
    attempts: int
    error: str | None
    queued_at: float | None
    started_at: float | None
    cached_at: float | None
    waiting_for_room: bool
    """The download waits for room under ``max_size`` (images being served, or reserved)."""
    bytes_needed: int | None
    """While `waiting_for_room`: bytes that cannot be freed yet; else None."""


class CachedEntry(TypedDict):
    """One element of Glance's ``cached_images`` list (plus Glance 33's ``id``/``checksum``)."""

    image_id: str
    hits: int
    last_accessed: float
    last_modified: float
    size: int
    id: str
    checksum: str | None


class CacheListing(TypedDict, total=False):
    """`GET /v2/cache`: Glance's two keys plus imagecache's two (SPEC §2.5)."""

    cached_images: list[CachedEntry]
    queued_images: list[str]
    caching_images: list[ImageReport]
    failed_images: list[ImageReport]


def image_report(
    image_id: str,
    state: ImageState,
    *,
    size: int | None = None,
    bytes: int = 0,
    percent: int = 0,
    queue_position: int | None = None,
    attempts: int = 0,
    error: str | None = None,
    queued_at: float | None = None,
    started_at: float | None = None,
    cached_at: float | None = None,
    bytes_needed: int | None = None,
) -> ImageReport:
    """An `ImageReport` with every key present (the fields not given take their empty value)."""
    return ImageReport(
        image_id=image_id,
        state=state,
        size=size,
        bytes=bytes,
        percent=percent,
        queue_position=queue_position,
        attempts=attempts,
        error=error,
        queued_at=queued_at,
        started_at=started_at,
        cached_at=cached_at,
        waiting_for_room=bytes_needed is not None,
        bytes_needed=bytes_needed,
    )
