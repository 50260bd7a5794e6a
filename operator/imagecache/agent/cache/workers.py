"""The worker pool: N tasks taking image ids from a FIFO; a `submit` wakes an idle one at once.

Each download runs as its own child task so `cancel(image_id)` stops exactly that download; a
worker that crashes is replaced by its supervisor (and counted), so one failure never stops the
pool. `alive()` feeds readiness. `drain()` stops taking jobs (SIGTERM) and hands back the
running downloads so the caller can give them time to finish; `stop()` cancels what is left.

A download that has to wait for something other than bytes (room under ``max_size``) gives
its worker back for the wait (`off_duty`): the worker takes the next job, so an image that
fits is not stuck behind one that does not. When the wait ends the download asks for a worker
again, ahead of the jobs not yet started, so at most `size` downloads move bytes at once.

`owns(image_id, seq)` tells whether a job for that record is waiting or running, so a record
no job owns any more can be recognised (and queued again).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger("imagecache.agent.cache.workers")

Job = Callable[[str, int], Coroutine[Any, Any, None]]

NEW, RESUMED = 1, 0  # priorities: a download coming back from `off_duty` goes first


class WorkerPool:
    """`size` workers running `job(image_id, seq)` in FIFO order of `submit`."""

    def __init__(self, size: int, job: Job, on_restart: Callable[[], None] = lambda: None) -> None:
        self.size = size
        self._job = job
        self._on_restart = on_restart
        # (priority, order, item): a new job (image_id, seq), or a download coming back
        # (its task, the future the adopting worker resolves)
        self._queue: asyncio.PriorityQueue[tuple[int, int, Any]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._workers: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self._on_duty: dict[asyncio.Task[None], asyncio.Future[None]] = {}  # set: worker freed
        self._busy: set[asyncio.Task[Any]] = set()  # workers running a job
        self._owned: Counter[tuple[str, int]] = Counter()  # jobs submitted and not yet ended
        self._stopping = False

    def start(self) -> None:
        self._workers = [self._spawn(n) for n in range(self.size)]
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-supervisor")

    def _spawn(self, number: int) -> asyncio.Task[None]:
        return asyncio.create_task(self._work(), name=f"worker-{number}")

    def submit(self, image_id: str, seq: int) -> None:
        self._owned[(image_id, seq)] += 1
        self._queue.put_nowait((NEW, next(self._order), (image_id, seq)))

    def adopt(self, image_id: str, seq: int) -> bool:
        """Run `job(image_id, seq)` now, beside the workers: a read-through download whose
        client is waiting for the bytes (see tee.py). It is a running download like the others
        for `cancel`, `drain`, `stop` and `owns`. False (nothing started) while draining."""
        if self._stopping or image_id in self.running:
            return False
        self._owned[(image_id, seq)] += 1
        task = asyncio.create_task(self._job(image_id, seq), name=f"download-{image_id}")
        self.running[image_id] = task
        task.add_done_callback(functools.partial(self._ended, image_id, seq))
        return True

    def owns(self, image_id: str, seq: int) -> bool:
        """Whether a job for this record is waiting for a worker or running."""
        return self._owned[(image_id, seq)] > 0

    def alive(self) -> bool:
        return (
            not self._stopping
            and self._supervisor is not None
            and not self._supervisor.done()
            and all(not w.done() for w in self._workers)
        )

    async def cancel(self, image_id: str) -> None:
        """Cancel the download of `image_id`, if one runs, and wait until it has stopped.

        No timeout: the caller (a `DELETE`) holds the image id and must not touch its files
        while the download still might; every await of a download is cancellable.
        """
        task = self.running.get(image_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def drain(self) -> list[asyncio.Task[None]]:
        """Take no new job (idle workers stop); the downloads still running, to wait for."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for worker in self._workers:
            if worker not in self._busy:
                worker.cancel()
        return [task for task in self.running.values() if not task.done()]

    @asynccontextmanager
    async def off_duty(self) -> AsyncIterator[None]:
        """For the download running this: its worker takes other jobs while the block runs.

        On a normal exit the download waits for a worker again (ahead of new jobs); when the
        block raises (cancelled, timed out) it ends without one. Outside the pool (no worker
        runs the current task) this does nothing.
        """
        task = asyncio.current_task()
        freed = self._on_duty.pop(task, None) if task is not None else None
        if task is None or freed is None:
            yield
            return
        freed.set_result(None)
        yield
        adopted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((RESUMED, next(self._order), (task, adopted)))
        await adopted

    async def _work(self) -> None:
        me = asyncio.current_task()
        while True:
            _, _, item = await self._queue.get()
            if self._stopping or me is None:
                return  # draining: the image stays queued in the database for the next start
            task: asyncio.Task[None]
            if isinstance(item[0], asyncio.Task):
                task, adopted = item
                if task.done() or adopted.done():
                    continue  # cancelled while it waited for a worker
                adopted.set_result(None)
            else:
                image_id, seq = item
                task = asyncio.create_task(self._job(image_id, seq), name=f"download-{image_id}")
                self.running[image_id] = task
                task.add_done_callback(functools.partial(self._ended, image_id, seq))
            freed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._on_duty[task] = freed
            self._busy.add(me)
            try:
                await asyncio.wait([task, freed], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if me.cancelling():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                raise
            finally:
                self._busy.discard(me)
                self._on_duty.pop(task, None)

    def _ended(self, image_id: str, seq: int, task: asyncio.Task[None]) -> None:
        job = (image_id, seq)
        self._owned[job] -= 1
        if self._owned[job] <= 0:
            del self._owned[job]
        if self.running.get(image_id) is task:
            del self.running[image_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("download of %s crashed", image_id, exc_info=error)

    async def _supervise(self) -> None:
        while True:
            done, _ = await asyncio.wait(self._workers, return_when=asyncio.FIRST_COMPLETED)
            for index, worker in enumerate(self._workers):
                if worker in done:
                    if not worker.cancelled() and worker.exception() is not None:
                        log.error("worker crashed: %r; restarting it", worker.exception())
                    self._on_restart()
                    self._workers[index] = self._spawn(index)

    async def stop(self) -> None:
        """Stop at once: downloads in flight (after `drain`, those that did not finish in time)
        stop, and resume at the next start."""
        self._stopping = True
        tasks = [*self.running.values(), *self._workers]
        if self._supervisor is not None:
            self._supervisor.cancel()
            tasks.append(self._supervisor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
