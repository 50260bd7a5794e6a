"""Which images changed between two answers of one agent (pure).

An agent's ``GET /v2/cache`` lists every image it knows; the operator polls each agent once per
interval however many requests target it. Only the requests whose image's entry changed (or
that wait for this agent's next answer) need reconciling: `image_signatures` reduces a listing to
one comparable value per image, in two parts (its state, and its progress: queue position,
bytes, percent), and `changed_images` compares two of them, telling the images whose state
changed from those whose progress alone moved (the loop reconciles those at most every
``status_interval``: a queue that advances does not reconcile every request queued behind).
An error answer has no images: it differs from any listing, and from an error with another
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagecache.core.wire import CacheListing

Signature = tuple[Any, Any]
"""(what the image's state is, how far it got)."""

_PROGRESS = frozenset({"bytes", "percent", "queue_position"})


@dataclass(frozen=True)
class Changes:
    """Images whose state changed, and images whose progress alone moved."""

    state: frozenset[str]
    progress: frozenset[str]


def image_signatures(listing: CacheListing) -> dict[str, Signature]:
    """Per image id, what a request's status is computed from (state, progress, position).

    Linear in the listing (an agent may list thousands of queued images); the precedence is
    `core.status.find_image`'s: failed, caching, cached, then queued.
    """
    signatures: dict[str, Signature] = {}
    caching = list(listing.get("caching_images") or [])
    caching_ids = {str(entry.get("image_id")) for entry in caching}
    position = 0
    for image_id in listing.get("queued_images") or []:
        if image_id not in caching_ids:
            signatures[image_id] = (("queued",), position)
            position += 1
    for cached in listing.get("cached_images") or []:
        size, modified = cached.get("size"), cached.get("last_modified")
        signatures[str(cached.get("image_id"))] = (("cached", size, modified), None)
    for entry in caching:
        signatures[str(entry.get("image_id"))] = _split("caching", entry)
    for entry in listing.get("failed_images") or []:
        signatures[str(entry.get("image_id"))] = _split("failed", entry)
    return signatures


def _split(state: str, entry: Mapping[str, Any]) -> Signature:
    items = sorted((str(k), repr(v)) for k, v in entry.items())
    return (
        (state, *(item for item in items if item[0] not in _PROGRESS)),
        tuple(item for item in items if item[0] in _PROGRESS),
    )


def changed_images(
    old: Mapping[str, Signature] | None, new: Mapping[str, Signature] | None
) -> Changes | None:
    """What differs between two answers; None means "everything" (an error, or the first)."""
    if old is None or new is None:
        return None
    state: set[str] = {image for image in old if image not in new}
    progress: set[str] = set()
    for image, (now, done) in new.items():
        before = old.get(image)
        if before is None or before[0] != now:
            state.add(image)
        elif before[1] != done:
            progress.add(image)
    return Changes(state=frozenset(state), progress=frozenset(progress))
