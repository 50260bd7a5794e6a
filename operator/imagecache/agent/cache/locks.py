"""`IdLocks`: one lock per image id, so operations on one image never interleave.

Queueing, deleting, clearing, evicting and committing an image each hold its id while they
look at and change its record, its database row and its files. Without this a `DELETE` waiting
for a download to stop raced a `PUT` of the same id: the new download resumed from the partial
file the `DELETE` was about to unlink (wrong bytes committed) or lost its file ("No such
file"), and the `DELETE`'s database write removed the new row.

`try_hold` takes a free id without yielding to the event loop, so a step that must choose and
claim in one go (eviction picks victims nobody else is working on) can do so; `hold` waits in
FIFO order. A released id is handed to the first waiter directly (no barging). Whoever
registered with `on_free` is told each time an id becomes free (`Room`: a cached image whose
id was held is a candidate for eviction again).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager


class IdLocks:
    """Exclusive holds on image ids; an id not held costs nothing."""

    def __init__(self) -> None:
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._on_free: list[Callable[[], None]] = []

    def on_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever an id becomes free."""
        self._on_free.append(callback)

    def held(self, image_id: str) -> bool:
        return image_id in self._waiters

    def try_hold(self, image_id: str) -> bool:
        """Hold `image_id` now if it is free (no await, so nothing runs in between)."""
        if image_id in self._waiters:
            return False
        self._waiters[image_id] = deque()
        return True

    async def acquire(self, image_id: str) -> None:
        if self.try_hold(image_id):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[image_id].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(image_id)  # handed over just as we were cancelled: pass it on
            else:
                self._waiters[image_id].remove(waiter)
            raise

    def release(self, image_id: str) -> None:
        """Hand `image_id` to its first waiter, or free it."""
        waiters = self._waiters[image_id]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        del self._waiters[image_id]
        for callback in self._on_free:
            callback()

    @asynccontextmanager
    async def hold(self, *image_ids: str) -> AsyncIterator[None]:
        """Hold every id (taken in sorted order, so two multi-id holds never deadlock)."""
        taken: list[str] = []
        try:
            for image_id in sorted(set(image_ids)):
                await self.acquire(image_id)
                taken.append(image_id)
            yield
        finally:
            for image_id in taken:
                self.release(image_id)

    def release_all(self, image_ids: Iterable[str]) -> None:
        for image_id in image_ids:
            self.release(image_id)
