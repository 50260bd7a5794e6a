"""Unit tests of `core.workqueue.WorkQueue` (client-go workqueue semantics, clock passed in).

Covers: dirty keys deduplicated; a key marked while processing is processed once more after
`done`, never twice at once; due times (earliest wins, dropped when the key is taken);
per-key exponential capped backoff reset by `forget`; `discard`; `next_due` skipping stale
heap entries; taking many resting keys costs nothing.
"""

from __future__ import annotations

import pytest

from imagecache.core.workqueue import WorkQueue


def _queue() -> WorkQueue[str]:
    return WorkQueue(base_delay=1.0, max_delay=8.0)


def test_dirty_keys_are_deduplicated_in_order() -> None:
    queue = _queue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert queue.take(now=0) == ["a", "b", "c"]
    assert queue.take(now=0) == []


def test_a_key_marked_while_processing_is_processed_once_more_after_done() -> None:
    queue = _queue()
    queue.add("a")
    assert queue.take(now=0) == ["a"]
    queue.add("a")
    queue.add("a")
    assert queue.take(now=0) == []  # never twice at once
    assert queue.processing("a")
    queue.done("a")
    assert queue.take(now=0) == ["a"]
    queue.done("a")
    assert queue.take(now=0) == [] and len(queue) == 0


def test_due_times_earliest_wins_and_taking_drops_them() -> None:
    queue = _queue()
    queue.add_at("a", 10)
    queue.add_at("a", 5)
    queue.add_at("a", 7)  # later than the one it has: ignored
    assert queue.due_at("a") == 5 and queue.next_due() == 5
    assert queue.take(now=4.9) == []
    assert queue.take(now=5) == ["a"]
    queue.done("a")
    assert queue.next_due() is None  # the 10 and 7 entries were stale
    assert queue.take(now=100) == []


def test_a_dirty_key_taken_early_loses_its_due_time() -> None:
    queue = _queue()
    queue.add_at("a", 10)
    queue.add("a")
    assert queue.take(now=0) == ["a"]
    queue.done("a")
    assert queue.take(now=10) == []  # the reconcile that ran decides the next time


@pytest.mark.parametrize(
    ("failures", "delays"),
    [
        pytest.param(1, [1.0], id="first"),
        pytest.param(5, [1.0, 2.0, 4.0, 8.0, 8.0], id="capped"),
    ],
)
def test_backoff_is_exponential_and_capped(failures: int, delays: list[float]) -> None:
    queue = _queue()
    assert [queue.add_rate_limited("a", now=0) for _ in range(failures)] == delays
    assert queue.failures("a") == failures
    queue.forget("a")
    assert queue.add_rate_limited("a", now=0) == 1.0


def test_add_after_and_discard() -> None:
    queue = _queue()
    queue.add_after("a", 0, now=3)
    queue.add_after("b", 2, now=3)
    assert queue.take(now=3) == ["a"]
    queue.discard("b")
    assert queue.take(now=10) == [] and queue.next_due() is None


def test_many_resting_keys_cost_a_heap_peek() -> None:
    queue = _queue()
    for n in range(10_000):
        queue.add_at(f"k{n}", 1_000 + n)
    assert queue.take(now=0) == []
    assert queue.take(now=1_001) == ["k0", "k1"]
    assert len(queue) == 9_998
