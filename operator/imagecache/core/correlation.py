"""Event aggregation like client-go's ``EventCorrelator`` (pure, ``now`` passed in).

An event identical to one posted on the same object within `window` seconds (same type, reason
and message) is not a new Event object: the existing one gets its ``count`` raised and its
``lastTimestamp`` moved (a PATCH). The memory is bounded (least recently used entries dropped,
4,096 by default as in client-go), so a forgotten series simply starts a new Event.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

EventKey = tuple[str, str, str, str, str]
"""(namespace, object uid, type, reason, message)."""


@dataclass(frozen=True)
class Series:
    """A posted Event and how often it happened: `name` is empty until it is created."""

    name: str
    count: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Correlation:
    """What to do with one event: create it (`series` is None) or patch `series` to `count`."""

    series: Series | None
    count: int


class EventCorrelator:
    """Remembers the Events posted lately; says whether a new one repeats one of them."""

    def __init__(self, *, window: float = 600.0, max_entries: int = 4096) -> None:
        self._window = window
        self._max = max_entries
        self._seen: OrderedDict[EventKey, Series] = OrderedDict()

    def correlate(self, key: EventKey, *, now: float) -> Correlation:
        """Create (no recent identical event) or patch the existing series to the new count."""
        series = self._seen.get(key)
        if series is None or not series.name or now - series.last_at > self._window:
            return Correlation(series=None, count=1)
        return Correlation(series=series, count=series.count + 1)

    def posted(self, key: EventKey, *, name: str, count: int, now: float) -> None:
        """The event was created (`name`) or patched to `count`."""
        before = self._seen.pop(key, None)
        first = before.first_at if before is not None and count > 1 else now
        self._seen[key] = Series(name=name, count=count, first_at=first, last_at=now)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def forget(self, key: EventKey) -> None:
        """The series' Event is gone (e.g. a 404 on the patch): the next one is created anew."""
        self._seen.pop(key, None)

    def forget_object(self, namespace: str, uid: str) -> None:
        """The object is gone: drop its series."""
        for key in [k for k in self._seen if k[0] == namespace and k[1] == uid]:
            del self._seen[key]
