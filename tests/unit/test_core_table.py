"""`ImageTable`: a mapping whose state index, cached-bytes total and queue order (positions by
binary search) follow every write, checked against full scans (`images.queue_positions`)."""

from __future__ import annotations

import random

import pytest

from imagecache.core import images
from imagecache.core.images import ImageRecord, State
from imagecache.core.table import STATES, ImageTable


def record(image_id: str, state: State, size: int | None = None) -> ImageRecord:
    return ImageRecord(image_id=image_id, state=state, seq=1, size=size)


def test_index_and_bytes_follow_transitions() -> None:
    table = ImageTable()
    table["a"] = record("a", "queued", 100)
    table["b"] = record("b", "cached", 40)
    assert table.cached_bytes == 40
    assert [r.image_id for r in table.in_state("queued", "caching")] == ["a"]
    table["a"] = record("a", "cached", 100)
    assert table.cached_bytes == 140
    assert table.count("cached") == 2 and table.count("queued") == 0
    table["b"] = record("b", "cached", 50)  # replaced in place: counted once, new size
    assert table.cached_bytes == 150
    del table["a"]
    assert table.cached_bytes == 50 and "a" not in table
    assert table.pop("b").size == 50
    assert table.cached_bytes == 0 and len(table) == 0


def test_a_record_must_be_stored_under_its_own_id() -> None:
    with pytest.raises(KeyError):
        ImageTable()["a"] = record("b", "queued")


def test_random_writes_match_a_full_scan() -> None:
    """The kept totals equal what scanning every record would say, after any sequence."""
    rng = random.Random(7)
    table = ImageTable()
    for _ in range(2000):
        image_id = f"i{rng.randrange(30)}"
        if rng.random() < 0.2:
            table.pop(image_id, None)
        else:
            table[image_id] = record(image_id, rng.choice(STATES), rng.choice([None, 1, 10, 100]))
        scanned = [r for r in table.values() if r.state == "cached"]
        assert table.cached_bytes == sum(r.size or 0 for r in scanned)
        for state in STATES:
            assert {r.image_id for r in table.in_state(state)} == {
                r.image_id for r in table.values() if r.state == state
            }


def test_queue_positions_and_order_match_a_full_sort() -> None:
    """Positions kept by binary search equal the reference sort of the whole queue."""
    rng = random.Random(11)
    table = ImageTable()
    seq = 0
    for _ in range(1500):
        image_id = f"i{rng.randrange(40)}"
        if rng.random() < 0.2:
            table.pop(image_id, None)
        else:
            seq += 1
            state = rng.choice(STATES)
            table[image_id] = ImageRecord(image_id=image_id, state=state, seq=seq)
        waiting = list(table.in_state("queued", "caching"))
        expected = images.queue_positions(waiting)
        assert {i: table.queue_position(i) for i in expected} == expected
        assert [r.image_id for r in table.queue_order()] == [
            r.image_id for r in images.queue_order(waiting)
        ]
        for record_ in table.in_state("cached", "failed"):
            assert table.queue_position(record_.image_id) is None
    assert table.queue_position("unknown") is None
