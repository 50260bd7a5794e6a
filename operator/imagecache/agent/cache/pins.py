"""`Pins`: the cached files being served right now, and those waiting to be removed.

A served file is pinned from the moment its response is set up until it has been sent; eviction
never picks a pinned image. An image deleted, cleared or evicted while pinned loses its record
at once, but its file stays until the last pin is released ("doomed"): its bytes still count
against ``max_size`` meanwhile (`doomed_bytes`). `on_unpinned` is called with an id whenever its
last pin is released: a doomed file may go now, and eviction has one more candidate. A new
download of the same id that commits over a doomed file takes it back (`reclaim`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Pins:
    """Pin counts per image id, plus the doomed files and their sizes."""

    def __init__(self, on_unpinned: Callable[[str], None]) -> None:
        self._counts: Counter[str] = Counter()
        self._doomed: dict[str, int] = {}
        self._on_unpinned = on_unpinned

    def pin(self, image_id: str) -> Callable[[], None]:
        """Pin `image_id`; the returned callback releases this pin (once, however often called)."""
        self._counts[image_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(image_id)

        return release

    def _release(self, image_id: str) -> None:
        self._counts[image_id] -= 1
        if self._counts[image_id] > 0:
            return
        del self._counts[image_id]
        self._on_unpinned(image_id)

    def is_pinned(self, image_id: str) -> bool:
        return self._counts[image_id] > 0

    def pinned(self) -> frozenset[str]:
        return frozenset(self._counts)

    def doom(self, image_id: str, size: int) -> None:
        """The image's record is gone; remove its file once unpinned, count it until then."""
        self._doomed[image_id] = size

    def reclaim(self, image_id: str) -> bool:
        """The file is no longer doomed (removed, or replaced by a new download)."""
        return self._doomed.pop(image_id, None) is not None

    def is_doomed(self, image_id: str) -> bool:
        return image_id in self._doomed

    @property
    def doomed_bytes(self) -> int:
        return sum(self._doomed.values())
