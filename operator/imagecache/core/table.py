"""`ImageTable`: the agent's live image records, indexed by state.

A mapping ``image_id → ImageRecord`` that keeps, on every write, which ids are in which state
and how many bytes the cached images hold. The hot paths (room for a new download, the metrics,
the cached listing) then cost what they return, not a scan of every record the agent knows —
which matters when a burst of `PUT`s has queued thousands of images.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from imagecache.core.images import ImageRecord, State

STATES: tuple[State, ...] = ("queued", "caching", "cached", "failed")


class ImageTable(MutableMapping[str, ImageRecord]):
    """Image records by id, with a per-state index and the cached bytes kept current."""

    def __init__(self) -> None:
        self._records: dict[str, ImageRecord] = {}
        self._by_state: dict[State, dict[str, ImageRecord]] = {state: {} for state in STATES}
        self.cached_bytes = 0

    def __getitem__(self, image_id: str) -> ImageRecord:
        return self._records[image_id]

    def __setitem__(self, image_id: str, record: ImageRecord) -> None:
        if record.image_id != image_id:
            raise KeyError(f"record of {record.image_id!r} stored under {image_id!r}")
        self._unindex(self._records.get(image_id))
        self._records[image_id] = record
        self._by_state[record.state][image_id] = record
        if record.state == "cached":
            self.cached_bytes += record.size or 0

    def __delitem__(self, image_id: str) -> None:
        self._unindex(self._records.pop(image_id))

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def _unindex(self, old: ImageRecord | None) -> None:
        if old is None:
            return
        del self._by_state[old.state][old.image_id]
        if old.state == "cached":
            self.cached_bytes -= old.size or 0

    def in_state(self, *states: State) -> Iterator[ImageRecord]:
        """The records in any of ``states``, state by state, each in insertion order."""
        for state in states:
            yield from self._by_state[state].values()

    def count(self, *states: State) -> int:
        return sum(len(self._by_state[state]) for state in states)
