"""`Room` on its own (in-process, with real `IdLocks`, `Pins` and an `ImageTable`).

Covers (issue 16, item 6): a waiting reservation is woken by every change that can make room —
a commit that lets its id go (the wake-up the agent used to miss: the commit released its room
while it still held the id, so its image was no candidate, and letting the id go told nobody),
a pin released — and gives up with `NoRoom` (bytes it lacks) after its timeout, without ever
holding room meanwhile; `on_wait` wraps exactly the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from imagecache.agent.cache.errors import NoRoom
from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.pins import Pins
from imagecache.agent.cache.room import Room
from imagecache.core.images import ImageRecord
from imagecache.core.table import ImageTable

MiB = 2**20
BOUND = 10.0  # seconds any wait in these tests may take at most


class Fixture:
    def __init__(self, *, max_size: int, wait_timeout: float = 60.0) -> None:
        self.records = ImageTable()
        self.locks = IdLocks()
        self.room: Room
        self.pins = Pins(on_unpinned=lambda _: self.room.notify())
        self.evicted: list[str] = []
        self.room = Room(
            max_size=max_size,
            wait_timeout=wait_timeout,
            records=self.records,
            pins=self.pins,
            locks=self.locks,
            evict=self._evict,
        )

    async def _evict(self, victims: list[str]) -> None:
        self.evicted.extend(victims)
        self.locks.release_all(victims)

    def cache(self, image_id: str, size: int, last_accessed: float = 1.0) -> None:
        self.records[image_id] = ImageRecord(
            image_id=image_id, state="cached", seq=1, size=size, last_accessed=last_accessed
        )

    async def commit(self, image_id: str, size: int) -> None:
        """As the downloader commits: holding the id, the record turns cached, room released,
        then the row is written (the event loop runs other tasks meanwhile)."""
        async with self.locks.hold(image_id):
            self.cache(image_id, size)
            self.room.release(image_id)
            await asyncio.sleep(0)  # the database write: waiters woken by `release` run now


async def test_commit_letting_its_id_go_wakes_a_waiter() -> None:
    f = Fixture(max_size=60 * MiB)
    for n in range(5):
        await f.room.reserve(f"img{n}", 12 * MiB)
    waiter = asyncio.create_task(f.room.reserve("late", 12 * MiB))
    await asyncio.sleep(0)  # let it find no room and wait
    assert f.room.waiting("late") == 12 * MiB
    await f.commit("img0", 12 * MiB)  # the only change: one commit, then its id is let go
    await asyncio.wait_for(waiter, BOUND)
    assert f.evicted == ["img0"]
    assert f.room.waiting("late") is None


async def test_released_pin_wakes_a_waiter() -> None:
    f = Fixture(max_size=24 * MiB)
    f.cache("served", 16 * MiB)
    unpin = f.pins.pin("served")
    waiter = asyncio.create_task(f.room.reserve("new", 16 * MiB))
    await asyncio.sleep(0)
    assert f.room.waiting("new") == 8 * MiB
    unpin()
    await asyncio.wait_for(waiter, BOUND)
    assert f.evicted == ["served"]


async def test_no_room_within_the_timeout_fails_with_what_is_lacking() -> None:
    f = Fixture(max_size=24 * MiB, wait_timeout=0.05)
    f.cache("served", 16 * MiB)
    f.pins.pin("served")
    waits: list[str] = []

    @asynccontextmanager
    async def on_wait() -> AsyncIterator[None]:
        waits.append("enter")
        yield
        waits.append("exit")

    with pytest.raises(NoRoom) as failure:
        await asyncio.wait_for(f.room.reserve("new", 16 * MiB, on_wait=on_wait), BOUND)
    assert failure.value.needed == 8 * MiB
    assert waits == ["enter"]  # the wait ended by raising: no worker asked for again
    assert f.room.reserved_bytes == 0
    assert f.room.waiting("new") is None


async def test_room_there_at_once_does_not_wait() -> None:
    f = Fixture(max_size=24 * MiB)
    f.cache("old", 16 * MiB)

    @asynccontextmanager
    async def on_wait() -> AsyncIterator[None]:
        raise AssertionError("must not wait")
        yield

    await f.room.reserve("new", 16 * MiB, on_wait=on_wait)
    assert f.evicted == ["old"]
    assert f.room.reserved_bytes == 16 * MiB
