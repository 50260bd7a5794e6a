"""`Room`: space for downloads under ``max_size`` — reservations, and eviction to make room.

A download reserves its image's size before it writes a byte; the reservation ends when the
image is committed (its bytes are then cached bytes) or the download ends otherwise. Used space
is cached bytes + doomed files still being served (`Pins.doomed_bytes`) + other reservations.

When an image does not fit even after evicting every cached image not being served, the
download waits: other reservations end (their images become evictable or give their space
back) and pins are released. Only an image larger than ``max_size`` can never fit and fails at
once. (Counting other reservations as unfreeable made images that fit fail permanently with 8
workers while 2 workers cached the same set.)

Victims are chosen and claimed in one step (their ids held in `IdLocks`, records dropped) with
no await in between, so two downloads never count the same victim and no `PUT` of a victim runs
while its file is being removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from imagecache.agent.cache.locks import IdLocks
from imagecache.agent.cache.pins import Pins
from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims
from imagecache.core.table import ImageTable

log = logging.getLogger("imagecache.agent")

Evict = Callable[[list[str]], Awaitable[None]]


class Room:
    """Reservations by image id, and the eviction that makes them fit."""

    def __init__(
        self,
        *,
        max_size: int,
        records: ImageTable,
        pins: Pins,
        locks: IdLocks,
        evict: Evict,
    ) -> None:
        self.max_size = max_size
        self._records = records
        self._pins = pins
        self._locks = locks
        self._evict = evict
        self._reserved: dict[str, int] = {}
        self._reserved_bytes = 0
        self._changed = asyncio.Event()

    @property
    def reserved_bytes(self) -> int:
        return self._reserved_bytes

    def used(self, *, excluding: str | None = None) -> int:
        """Bytes counted against ``max_size``: cached, doomed, and reserved by other downloads."""
        reserved = self._reserved_bytes - self._reserved.get(excluding or "", 0)
        return self._records.cached_bytes + self._pins.doomed_bytes + reserved

    async def reserve(self, image_id: str, size: int) -> None:
        """Reserve `size` bytes for `image_id`, evicting LRU images; wait while others hold room.

        Raises `DoesNotFit` only when `size` exceeds ``max_size``.
        """
        if size > self.max_size:
            raise DoesNotFit(f"image of {size} bytes is larger than max_size {self.max_size}")
        self.release(image_id, notify=False)
        while True:
            changed = self._changed
            try:
                victims = self._victims(size, used=self.used())
            except DoesNotFit as error:
                log.debug("no room yet for %s: %s", image_id, error)
                await changed.wait()
                continue
            for victim in victims:
                self._locks.try_hold(victim)  # free: held ids were not candidates
                self._records.pop(victim, None)
            self._reserved[image_id] = size
            self._reserved_bytes += size
            if victims:
                log.info("evicting %s", ", ".join(victims), extra={"event": "evicted"})
                await self._evict(victims)
            return

    def _victims(self, size: int, *, used: int) -> list[str]:
        """The images to evict for `size` more bytes; `DoesNotFit` when that is not enough."""
        return choose_victims(
            cached=(
                Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0)
                for r in self._records.in_state("cached")
                if not self._locks.held(r.image_id)
            ),
            pinned=self._pins.pinned(),
            used=used,
            incoming=size,
            max_size=self.max_size,
        )

    def fits_now(self, image_id: str, size: int) -> bool:
        """Whether `reserve(image_id, size)` would succeed without waiting (evicting LRU
        images as needed); a read-through download with its client waiting asks this first."""
        if size > self.max_size:
            return False
        try:
            self._victims(size, used=self.used(excluding=image_id))
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
        """Space or candidates may have changed: waiting reservations look again."""
        self._changed.set()
        self._changed = asyncio.Event()
