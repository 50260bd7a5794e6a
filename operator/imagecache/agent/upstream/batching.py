"""`ThreadBatch`: many small blocking calls, one thread hop.

Under a burst of `PUT`s each request needs one small blocking call (a ``stat`` of an upstream
file). Sending each to a thread costs more than the call: a thread wake-up, a GIL hand-off and a
loop wake-up. A `ThreadBatch` runs every call asked for while one hop is in flight together in
the next hop, as the database's group commit does for writes (see db.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ThreadBatch(Generic[K, V]):
    """``await batch.call(key)`` == ``await asyncio.to_thread(function, key)``, grouped."""

    def __init__(self, function: Callable[[K], V]) -> None:
        self._function = function
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._running: asyncio.Task[None] | None = None

    async def call(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[K, asyncio.Future[V]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                outcomes = await asyncio.to_thread(self._run, [key for key, _ in batch])
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running = None
            for _, future in batch + self._waiting:  # only when this task itself was cancelled
                future.cancel()
            self._waiting = []

    def _run(self, keys: list[K]) -> list[V | BaseException]:
        """In the thread: every call's value, or the exception it raised."""
        outcomes: list[V | BaseException] = []
        for key in keys:
            try:
                outcomes.append(self._function(key))
            except Exception as error:
                outcomes.append(error)
        return outcomes
