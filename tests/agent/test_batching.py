"""`ThreadBatch`: concurrent calls share thread hops; each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imagecache.agent.upstream.batching import ThreadBatch


class Recorder:
    """A blocking function that records which keys ran together in one thread hop."""

    def __init__(self) -> None:
        self.hops: list[list[int]] = []
        self._current: list[int] | None = None
        self._thread: int | None = None
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()  # a call is running (and blocked on `release`)

    def __call__(self, key: int) -> int:
        if self._thread != threading.get_ident() or self._current is None:
            self._current, self._thread = [], threading.get_ident()
            self.hops.append(self._current)
        self._current.append(key)
        self.entered.set()
        self.release.wait(10)
        if key < 0:
            raise ValueError(f"negative {key}")
        return key * 10

    def new_hop(self) -> None:
        self._current = None


async def test_calls_made_while_a_hop_runs_share_the_next_one() -> None:
    recorder = Recorder()
    recorder.release.clear()  # the first hop blocks until every other call is waiting
    batch = ThreadBatch(recorder)
    first = asyncio.ensure_future(batch.call(0))
    # The first hop runs key 0 alone: wait until its thread is inside the call (and blocked),
    # not for a number of loop turns, which raced the executor thread.
    assert await asyncio.to_thread(recorder.entered.wait, 10)
    others = [asyncio.ensure_future(batch.call(k)) for k in range(1, 50)]
    await asyncio.sleep(0)  # every other call is waiting for the next hop
    recorder.new_hop()  # safe: the thread is blocked on `release`
    recorder.release.set()
    assert await first == 0
    assert await asyncio.gather(*others) == [k * 10 for k in range(1, 50)]
    assert [sorted(hop) for hop in recorder.hops if hop] == [[0], list(range(1, 50))]


async def test_an_error_reaches_only_its_own_caller() -> None:
    batch = ThreadBatch(Recorder())
    outcomes = await asyncio.gather(
        batch.call(1), batch.call(-1), batch.call(2), return_exceptions=True
    )
    assert outcomes[0] == 10 and outcomes[2] == 20
    assert isinstance(outcomes[1], ValueError) and "negative -1" in str(outcomes[1])


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batch = ThreadBatch(recorder)
    doomed = asyncio.ensure_future(batch.call(1))
    kept = asyncio.ensure_future(batch.call(2))
    await asyncio.sleep(0)
    doomed.cancel()
    recorder.release.set()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await batch.call(3) == 30, "the batch keeps working afterwards"
