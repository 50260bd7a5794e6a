"""`Room`: space for downloads under ``max_size`` — reservations, and eviction to make room.

A download reserves its image's size before it writes a byte; the reservation ends when the
image is committed (its bytes are then cached bytes) or the download ends otherwise. Used space
is cached bytes + doomed files still being served (`Pins.doomed_bytes`) + other reservations.

When an image does not fit even after evicting every cached image not being served, the
download waits: other reservations end (their images become evictable or give their space
back), pins are released and held ids are let go. Every one of those changes calls `notify`,
which wakes every waiter (each looks again), so no wake-up is missed: a commit, for instance,
releases its reservation while it still holds its id, and the image becomes evictable only
when the id is let go — a second change, a second notification. The wait is bounded
(``room_wait_timeout``): past it the reservation fails with `NoRoom`. Only an image larger
than ``max_size`` can never fit and fails at once (`DoesNotFit`). While it waits the download
gives its worker back (`on_wait`), so an image that fits is not stuck behind it; `waiting`
says who waits and how many bytes each still lacks, for the per-image report.

Victims are chosen and claimed in one step (their ids held in `IdLocks`, records dropped) with
no await in between, so two downloads never count the same victim and no `PUT` of a victim runs
while its file is being removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from imagecache.agent.cache.errors import NoRoom
from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.pins import Pins
from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims
from imagecache.core.table import ImageTable

log = logging.getLogger("imagecache.agent")

Evict = Callable[[list[str]], Awaitable[None]]
OnWait = Callable[[], AbstractAsyncContextManager[None]]


class Room:
    """Reservations by image id, and the eviction that makes them fit."""

    def __init__(
        self,
        *,
        max_size: int,
        wait_timeout: float,
        records: ImageTable,
        pins: Pins,
        locks: IdLocks,
        evict: Evict,
    ) -> None:
        self.max_size = max_size
        self.wait_timeout = wait_timeout
        self._records = records
        self._pins = pins
        self._locks = locks
        self._evict = evict
        self._reserved: dict[str, int] = {}
        self._reserved_bytes = 0
        self._waiting: dict[str, int] = {}  # image id -> bytes it still lacks
        self._changed = asyncio.Event()
        locks.on_free(self.notify)

    @property
    def reserved_bytes(self) -> int:
        return self._reserved_bytes

    def waiting(self, image_id: str) -> int | None:
        """Bytes `image_id` still lacks while it waits for room; None when it does not wait."""
        return self._waiting.get(image_id)

    def used(self, *, excluding: str | None = None) -> int:
        """Bytes counted against ``max_size``: cached, doomed, and reserved by other downloads."""
        reserved = self._reserved_bytes - self._reserved.get(excluding or "", 0)
        return self._records.cached_bytes + self._pins.doomed_bytes + reserved

    async def reserve(
        self,
        image_id: str,
        size: int,
        *,
        on_wait: OnWait = contextlib.nullcontext,
        within: float | None = None,
    ) -> None:
        """Reserve `size` bytes for `image_id`, evicting LRU images; wait while others hold room.

        Raises `DoesNotFit` at once when `size` exceeds ``max_size``, and `NoRoom` when no room
        was found within `within` seconds (``room_wait_timeout`` when None). The wait runs
        inside `on_wait()` (the worker pool lends the worker to other downloads meanwhile).
        """
        if size > self.max_size:
            raise DoesNotFit(f"image of {size} bytes is larger than max_size {self.max_size}")
        self.release(image_id, notify=False)
        victims = self._claim(image_id, size)
        if victims is None:
            bound = self.wait_timeout if within is None else within
            async with on_wait():
                victims = await self._wait_for_room(image_id, size, bound)
                await self._evict_now(victims)
            return
        await self._evict_now(victims)

    async def _wait_for_room(self, image_id: str, size: int, within: float) -> list[str]:
        try:
            async with asyncio.timeout(within):
                while True:
                    changed = self._changed
                    victims = self._claim(image_id, size)
                    if victims is not None:
                        return victims
                    await changed.wait()
        except TimeoutError as error:
            lacking = self._waiting.get(image_id, size)
            raise NoRoom(
                f"no room for {size} bytes under max_size {self.max_size} within "
                f"{within:g}s ({lacking} bytes could not be freed: images being served, "
                "or reserved by other downloads)",
                needed=lacking,
            ) from error
        finally:
            self._waiting.pop(image_id, None)

    def _claim(self, image_id: str, size: int) -> list[str] | None:
        """Victims chosen, claimed and the reservation made, all at once; None: no room now."""
        cached = [
            Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0)
            for r in self._records.in_state("cached")
            if not self._locks.held(r.image_id)
        ]
        used = self.used()
        try:
            victims = choose_victims(
                cached=cached,
                pinned=self._pins.pinned(),
                used=used,
                incoming=size,
                max_size=self.max_size,
            )
        except DoesNotFit as error:
            pinned = self._pins.pinned()
            freeable = sum(c.size for c in cached if c.image_id not in pinned)
            self._waiting[image_id] = max(1, used + size - self.max_size - freeable)
            log.debug("no room yet for %s: %s", image_id, error)
            return None
        for victim in victims:
            self._locks.try_hold(victim)  # free: held ids were not candidates
            self._records.pop(victim, None)
        self._reserved[image_id] = size
        self._reserved_bytes += size
        return victims

    async def _evict_now(self, victims: list[str]) -> None:
        if victims:
            log.info("evicting %s", ", ".join(victims), extra={"event": "evicted"})
            await self._evict(victims)

    def fits_now(self, image_id: str, size: int) -> bool:
        """Whether `reserve(image_id, size)` would succeed without waiting (evicting LRU
        images as needed); a read-through download with its client waiting asks this first."""
        if size > self.max_size:
            return False
        try:
            choose_victims(
                cached=(
                    Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0)
                    for r in self._records.in_state("cached")
                    if not self._locks.held(r.image_id)
                ),
                pinned=self._pins.pinned(),
                used=self.used(excluding=image_id),
                incoming=size,
                max_size=self.max_size,
            )
        except DoesNotFit:
            return False
        return True

    def release(self, image_id: str, *, notify: bool = True) -> None:
        """The reservation of `image_id` ends (committed, failed, cancelled or deleted)."""
        size = self._reserved.pop(image_id, None)
        if size is not None:
            self._reserved_bytes -= size
            if notify:
                self.notify()

    def notify(self) -> None:
        """Space, pins or held ids changed: every waiting reservation looks again."""
        self._changed.set()
        self._changed = asyncio.Event()
