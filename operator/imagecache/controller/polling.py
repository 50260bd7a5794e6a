"""Shared agent reports: at most one ``GET /v2/cache`` per agent per poll interval.

Every request targeting an agent subscribes to that agent's one report instead of asking the
agent itself (SPEC §4.1 item 3). `AgentPollers.snapshot` returns the agent's latest report while
it is younger than the poll interval; otherwise the first caller fetches a new one while the
others wait for it (one lock per agent), so however many objects target an agent, the GETs to
it start at least ``interval`` seconds apart. A failed fetch is shared the same way, so an
unreachable agent is not hammered either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from imagecache.controller.agents import AgentPort
from imagecache.controller.errors import AgentError
from imagecache.core.wire import CacheListing


@dataclass(frozen=True)
class Snapshot:
    """One report of one agent: when its GET started (monotonic), and the report or error."""

    fetched_at: float
    report: CacheListing | None = None
    error: AgentError | None = None


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot: Snapshot | None = None


class AgentPollers:
    """The per-agent report cache all requests share."""

    def __init__(
        self,
        *,
        agents: AgentPort,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._agents = agents
        self._interval = interval
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self.fetches: dict[str, int] = {}

    def _fresh(self, slot: _Slot) -> Snapshot | None:
        snap = slot.snapshot
        if snap is not None and self._clock() - snap.fetched_at < self._interval:
            return snap
        return None

    async def snapshot(self, endpoint: str) -> Snapshot:
        """The agent's report, fetched at most once per interval for all callers."""
        slot = self._slots.setdefault(endpoint, _Slot())
        fresh = self._fresh(slot)
        if fresh is not None:
            return fresh
        async with slot.lock:
            fresh = self._fresh(slot)
            if fresh is not None:
                return fresh
            started = self._clock()
            self.fetches[endpoint] = self.fetches.get(endpoint, 0) + 1
            try:
                report = await self._agents.cache_report(endpoint)
            except AgentError as error:
                slot.snapshot = Snapshot(fetched_at=started, error=error)
            else:
                slot.snapshot = Snapshot(fetched_at=started, report=report)
            return slot.snapshot

    def forget_idle(self, *, older_than: float) -> None:
        """Drop agents whose last report is older than `older_than` seconds (gone pods)."""
        now = self._clock()
        for endpoint, slot in list(self._slots.items()):
            snap = slot.snapshot
            if not slot.lock.locked() and (snap is None or now - snap.fetched_at > older_than):
                del self._slots[endpoint]
