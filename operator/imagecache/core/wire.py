"""The agent ↔ operator wire contract: what ``GET /v2/cache`` and ``GET /v2/cache/{id}`` carry.

One definition for both sides: the agent builds these documents (`imagecache.core.images`), the
operator reads them (`imagecache.core.status`). The keys are SPEC §2.4/§2.5's; the agent's OpenAPI
document (``agent/openapi.json``) describes the same shapes for other clients.

Readers must not trust a document because it type-checks: it arrived over the network, so the
operator checks it at the boundary (`parse_listing`: the types of every field it reads, a
`WireError` naming the first bad one) and then reads every field with ``.get``, tolerating
missing ones (an older agent, a Glance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict, cast

from imagecache.core.strict_json import JsonTooDeep, strict_loads

SOURCE_HEADER = "X-Image-Cache-Source"
"""On ``PUT /v2/cache/{id}`` from the operator: the base URL of the peer agent to fill from."""
SOURCE_TOKEN_HEADER = "X-Image-Cache-Source-Token"
"""With it: the token the target presents to that peer (as ``X-Auth-Token``) to read the image;
with per-pod credentials a peer-read-only token of the peer's pod. Kept in memory only."""


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
    source: str
    """Where the bytes come (or came) from: ``upstream`` or a peer agent's base URL."""
    peer_fallback: str | None
    """Why a peer download fell back to the upstream (or why a peer hint was ignored)."""
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
    source: str
    """imagecache: where the bytes came from, ``upstream`` or a peer agent's base URL."""


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
    source: str = "upstream",
    peer_fallback: str | None = None,
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
        source=source,
        peer_fallback=peer_fallback,
        waiting_for_room=bytes_needed is not None,
        bytes_needed=bytes_needed,
    )


class WireError(ValueError):
    """A document that is not the wire contract's shape (names the first bad field)."""


LISTING_LIMIT = 16 * 2**20
"""The largest ``GET /v2/cache`` body read (about 80,000 entries): a bigger one is refused."""


def load_listing(data: bytes) -> CacheListing:
    """Parse and check a ``GET /v2/cache`` body (at most `LISTING_LIMIT` bytes, plain JSON:
    no ``NaN``/``Infinity``); `WireError` for anything else."""
    if len(data) > LISTING_LIMIT:
        raise WireError(f"larger than {LISTING_LIMIT} bytes")
    try:
        document = strict_loads(data)
    except JsonTooDeep as error:
        raise WireError("nested too deep") from error
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WireError(f"not JSON: {str(error)[:120]}") from error
    return parse_listing(document)


_NUMBER_FIELDS = ("size", "bytes", "percent", "queue_position", "attempts", "hits")
_TIME_FIELDS = ("queued_at", "started_at", "cached_at", "last_accessed", "last_modified")
_STRING_FIELDS = ("error", "state", "checksum", "id")
_NUMBER_TYPES = (int, float)  # exact types: a bool is not a number here
_EXPECTED: dict[str, tuple[tuple[type, ...], str]] = {
    **{name: (_NUMBER_TYPES, "not a number") for name in _NUMBER_FIELDS + _TIME_FIELDS},
    **{name: ((str,), "not a string") for name in _STRING_FIELDS},
}
"""The type each field the operator reads must have when present and not null."""


def _check_entry(entry: Any, where: str) -> None:
    if not isinstance(entry, dict):
        raise WireError(f"{where}: not an object")
    image_id = entry.get("image_id")
    if type(image_id) is not str or not image_id:
        raise WireError(f"{where}.image_id: not a non-empty string")
    for name, value in entry.items():  # one pass over what is there, unknown keys skipped
        expected = _EXPECTED.get(name)
        if expected is not None and value is not None and type(value) not in expected[0]:
            raise WireError(f"{where}.{name}: {expected[1]}")


def parse_listing(document: Any) -> CacheListing:
    """Check a ``GET /v2/cache`` answer against `CacheListing`; the listing, or `WireError`.

    ``cached_images`` is required (Glance's key); the other three lists are optional. Every
    entry must be an object with a string ``image_id`` and numbers where numbers belong;
    ``queued_images`` holds strings. Unknown keys are ignored (a newer agent).
    """
    if not isinstance(document, Mapping):
        raise WireError("not a JSON object")
    if not isinstance(document.get("cached_images"), list):
        raise WireError("cached_images: not a list")
    listing: dict[str, Any] = {}
    for name in ("cached_images", "caching_images", "failed_images"):
        entries = document.get(name)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise WireError(f"{name}: not a list")
        for index, entry in enumerate(entries):
            _check_entry(entry, f"{name}[{index}]")
        listing[name] = entries
    queued = document.get("queued_images")
    if queued is None:
        queued = []
    if not isinstance(queued, list) or not all(isinstance(item, str) for item in queued):
        raise WireError("queued_images: not a list of strings")
    listing["queued_images"] = queued
    return cast(CacheListing, listing)
