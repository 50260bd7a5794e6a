"""`ImageTable`: the agent's live image records, indexed by state.

A mapping ``image_id → ImageRecord`` that keeps, on every write, which ids are in which state
and how many bytes the cached images hold. The hot paths (room for a new download, the metrics,
the cached listing) then cost what they return, not a scan of every record the agent knows —
which matters when a burst of `PUT`s has queued thousands of images.

The waiting (``queued``) records are also kept in FIFO order as a sorted list of ``(seq, id)``:
an image's queue position is a binary search (O(log n)), not a sort of the whole queue per
`GET /v2/cache/{id}` (with 20,000 queued that sort took ~40 ms of event-loop time each).
New seqs are the largest, so enqueueing appends; the worker takes from the front.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, MutableMapping

from imagecache.core.images import ImageRecord, State

STATES: tuple[State, ...] = ("queued", "caching", "cached", "failed")


class ImageTable(MutableMapping[str, ImageRecord]):
    """Image records by id, with a per-state index and the cached bytes kept current."""

    def __init__(self) -> None:
        self._records: dict[str, ImageRecord] = {}
        self._by_state: dict[State, dict[str, ImageRecord]] = {state: {} for state in STATES}
        self.cached_bytes = 0
        self._waiting: list[tuple[int, str]] = []  # (seq, id) of the queued records, ascending

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
        elif record.state == "queued":
            insort(self._waiting, (record.seq, image_id))

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
        elif old.state == "queued":
            del self._waiting[bisect_left(self._waiting, (old.seq, old.image_id))]

    def in_state(self, *states: State) -> Iterator[ImageRecord]:
        """The records in any of ``states``, state by state, each in insertion order."""
        for state in states:
            yield from self._by_state[state].values()

    def count(self, *states: State) -> int:
        return sum(len(self._by_state[state]) for state in states)

    def queue_position(self, image_id: str) -> int | None:
        """0 while caching, else the place in the FIFO of queued images; None when not waiting."""
        record = self._records.get(image_id)
        if record is None:
            return None
        if record.state == "caching":
            return 0
        if record.state == "queued":
            return bisect_left(self._waiting, (record.seq, image_id))
        return None

    def queue_order(self) -> list[ImageRecord]:
        """Glance's ``queued_images`` order: downloading images first, then the waiting FIFO.

        Costs what it returns (the caching images are at most a few per worker).
        """
        caching = sorted(self._by_state["caching"].values(), key=lambda r: r.seq)
        queued = self._by_state["queued"]
        return [*caching, *(queued[image_id] for _, image_id in self._waiting)]
