"""The agent's cache-state parts on their own: `IdLocks` (one holder per id, FIFO, no barging,
cancellation-safe), `Pins` (doomed files counted until released) and `Room` (a reservation
waits for room other reservations hold; only an image over ``max_size`` never fits)."""

from __future__ import annotations

import asyncio

import pytest

from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.pins import Pins
from imagecache.agent.cache.room import Room
from imagecache.core.eviction import DoesNotFit
from imagecache.core.images import ImageRecord
from imagecache.core.table import ImageTable


async def test_one_holder_per_id_in_fifo_order() -> None:
    locks = IdLocks()
    order: list[str] = []

    async def work(name: str) -> None:
        async with locks.hold("a"):
            order.append(f"{name}+")
            await asyncio.sleep(0)
            order.append(f"{name}-")

    await asyncio.gather(*(work(n) for n in "xyz"))
    assert order == ["x+", "x-", "y+", "y-", "z+", "z-"]
    assert not locks.held("a")


async def test_try_hold_takes_only_a_free_id_and_other_ids_are_independent() -> None:
    locks = IdLocks()
    assert locks.try_hold("a") and not locks.try_hold("a")
    async with locks.hold("b"):
        assert locks.held("b")
    locks.release("a")
    assert not locks.held("a")


async def test_a_cancelled_waiter_never_keeps_the_id() -> None:
    locks = IdLocks()
    await locks.acquire("a")
    waiter = asyncio.ensure_future(locks.acquire("a"))
    await asyncio.sleep(0)
    locks.release("a")  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs: it must pass the id on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not locks.held("a")


def test_doomed_files_count_until_their_last_pin_goes() -> None:
    unpinned: list[str] = []
    pins = Pins(on_unpinned=unpinned.append)
    first, second = pins.pin("a"), pins.pin("a")
    pins.doom("a", 100)
    assert pins.doomed_bytes == 100 and pins.is_pinned("a")
    first()
    first()  # a release is counted once
    assert unpinned == []
    second()
    assert unpinned == ["a"] and not pins.is_pinned("a")
    assert pins.reclaim("a") and pins.doomed_bytes == 0


def cached(image_id: str, size: int, accessed: float) -> ImageRecord:
    return ImageRecord(image_id, "cached", seq=1, size=size, last_accessed=accessed)


async def test_a_reservation_waits_for_room_held_by_others() -> None:
    records = ImageTable()
    evicted: list[str] = []

    async def evict(victims: list[str]) -> None:
        evicted.extend(victims)
        locks.release_all(victims)

    locks = IdLocks()
    room = Room(
        max_size=300,
        wait_timeout=60.0,
        records=records,
        pins=Pins(lambda _: None),
        locks=locks,
        evict=evict,
    )
    for name in "abc":
        await room.reserve(name, 100)
    waiting = asyncio.ensure_future(room.reserve("d", 100))
    await asyncio.sleep(0)
    assert not waiting.done(), "d fits once another download ends: it waits, it does not fail"
    records["a"] = cached("a", 100, accessed=1.0)  # a is committed...
    room.release("a")  # ...so its reservation ends: now a is the LRU victim
    await asyncio.wait_for(waiting, 5)
    assert evicted == ["a"] and "a" not in records
    assert room.used() == 300
    with pytest.raises(DoesNotFit):
        await room.reserve("huge", 301)
