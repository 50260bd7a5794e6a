"""Which images changed between two answers of one agent (pure).

An agent's ``GET /v2/cache`` lists every image it knows; the operator polls each agent once per
interval however many requests target it. Only the requests whose image's entry changed (or
that wait for this agent's next answer) need reconciling: `image_signatures` reduces a listing to
one comparable value per image, `changed_images` compares two of them. An error answer has no
images: it differs from any listing, and from an error with another message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagecache.core.wire import CacheListing

Signature = tuple[Any, ...]


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
            signatures[image_id] = ("queued", position)
            position += 1
    for cached in listing.get("cached_images") or []:
        signatures[str(cached.get("image_id"))] = (
            "cached",
            cached.get("size"),
            cached.get("last_modified"),
        )
    for entry in caching:
        signatures[str(entry.get("image_id"))] = ("caching", _values(entry))
    for entry in listing.get("failed_images") or []:
        signatures[str(entry.get("image_id"))] = ("failed", _values(entry))
    return signatures


def _values(entry: Mapping[str, Any]) -> Signature:
    return tuple(sorted((str(k), repr(v)) for k, v in entry.items()))


def changed_images(
    old: Mapping[str, Signature] | None, new: Mapping[str, Signature] | None
) -> set[str] | None:
    """Images whose entry differs; None means "everything" (an answer became an error or back)."""
    if old is None or new is None:
        return None
    changed = {image for image, sig in new.items() if old.get(image) != sig}
    changed.update(image for image in old if image not in new)
    return changed
