"""A keyed work queue with client-go ``workqueue`` semantics (pure: ``now`` is passed in).

Three parts, as in client-go's rate-limiting delaying queue:

* a set of **dirty** keys: `add` marks a key; marking it twice before it is taken counts once.
  A key being processed (taken by `take`, not yet `done`) that is marked again is not handed out
  a second time at once: it stays dirty and is handed out again after `done`;
* a **due-time heap**: `add_at` / `add_after` make a key dirty at a later time; a key keeps only
  its earliest due time. Taking a key drops its due time (the reconcile that follows decides the
  next one, level-triggered);
* per-key **exponential backoff**: `add_rate_limited` delays a key by ``base * 2**failures``
  (capped at ``cap``) and counts the failure; `forget` resets the count after a success.

The cost of `take` grows with the keys that are due or dirty, never with the keys the queue
knows: a tick over thousands of resting keys is a heap peek.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Dirty keys, due times and per-key backoff; one consumer takes batches of ready keys."""

    def __init__(self, *, base_delay: float, max_delay: float) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self._base = base_delay
        self._cap = max_delay
        self._dirty: dict[K, None] = {}  # ready keys, insertion-ordered: first marked, first taken
        self._deferred: set[K] = set()  # marked while being processed: ready again after `done`
        self._processing: set[K] = set()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}

    # -- feeding ---------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Mark `key` dirty (handed out by the next `take`, or after its `done`)."""
        if key in self._processing:
            self._deferred.add(key)
        else:
            self._dirty[key] = None

    def add_at(self, key: K, when: float) -> None:
        """Make `key` dirty at `when` (the earliest of its due times wins)."""
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))

    def add_after(self, key: K, delay: float, *, now: float) -> None:
        """Make `key` dirty `delay` seconds after `now` (at once when ``delay <= 0``)."""
        if delay <= 0:
            self.add(key)
        else:
            self.add_at(key, now + delay)

    def add_rate_limited(self, key: K, *, now: float) -> float:
        """Retry `key` after its backoff (``base * 2**failures``, capped); the delay chosen."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._cap, self._base * 2.0 ** min(failures, 62))
        self.add_at(key, now + delay)
        return delay

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure backs off from the base delay again."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many failures in a row `key` has had since its last `forget`."""
        return self._failures.get(key, 0)

    def discard(self, key: K) -> None:
        """Forget everything about `key` (its object is gone); a processing key stays taken."""
        self._dirty.pop(key, None)
        self._deferred.discard(key)
        self._due.pop(key, None)
        self._failures.pop(key, None)

    # -- consuming -------------------------------------------------------------------------------

    def take(self, *, now: float, limit: int | None = None) -> list[K]:
        """The keys ready now (dirty or due, not being processed), marked as processing."""
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == when:
                del self._due[key]
                self.add(key)
        taken: list[K] = []
        for key in list(self._dirty) if limit is None else list(self._dirty)[:limit]:
            del self._dirty[key]
            self._due.pop(key, None)
            self._processing.add(key)
            taken.append(key)
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._due):
            self._compact()
        return taken

    def done(self, key: K) -> None:
        """Processing of `key` finished; if it was marked meanwhile, it is ready again."""
        self._processing.discard(key)
        if key in self._deferred:
            self._deferred.discard(key)
            self._dirty[key] = None

    def processing(self, key: K) -> bool:
        """True while `key` is taken and not yet `done`."""
        return key in self._processing

    def next_due(self) -> float | None:
        """The earliest due time (None when nothing is scheduled); stale heap entries skipped."""
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def ready(self) -> bool:
        """True when some dirty key is not being processed."""
        return bool(self._dirty)

    def due_at(self, key: K) -> float | None:
        """When `key` is scheduled (None: not scheduled)."""
        return self._due.get(key)

    def __len__(self) -> int:
        """Keys dirty or scheduled (not counting those only being processed)."""
        return len(self._dirty.keys() | self._deferred | self._due.keys())

    def _compact(self) -> None:
        self._heap = [
            (when, seq, key) for when, seq, key in self._heap if self._due.get(key) == when
        ]
        heapq.heapify(self._heap)
