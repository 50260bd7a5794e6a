"""The worker pool: N tasks taking image ids from a FIFO; a `submit` wakes an idle one at once.

Each download runs as its own child task so `cancel(image_id)` stops exactly that download; a
worker that crashes is replaced by its supervisor (and counted), so one failure never stops the
pool. `alive()` feeds readiness. `drain()` stops taking jobs (SIGTERM) and hands back the
running downloads so the caller can give them time to finish; `stop()` cancels what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("imagecache.agent.cache.workers")

Job = Callable[[str, int], Coroutine[Any, Any, None]]


class WorkerPool:
    """`size` workers running `job(image_id, seq)` in FIFO order of `submit`."""

    def __init__(self, size: int, job: Job, on_restart: Callable[[], None] = lambda: None) -> None:
        self.size = size
        self._job = job
        self._on_restart = on_restart
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self._busy: set[asyncio.Task[Any]] = set()  # workers running a job
        self._stopping = False

    def start(self) -> None:
        self._workers = [self._spawn(n) for n in range(self.size)]
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-supervisor")

    def _spawn(self, number: int) -> asyncio.Task[None]:
        return asyncio.create_task(self._work(), name=f"worker-{number}")

    def submit(self, image_id: str, seq: int) -> None:
        self._queue.put_nowait((image_id, seq))

    def adopt(self, image_id: str, seq: int) -> bool:
        """Run `job(image_id, seq)` now, beside the workers: a read-through download whose
        client is waiting for the bytes (see tee.py). It is a running download like the others
        for `cancel`, `drain` and `stop`. False (nothing started) while draining."""
        if self._stopping or image_id in self.running:
            return False
        task = asyncio.create_task(self._job(image_id, seq), name=f"download-{image_id}")
        self.running[image_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self.running.get(image_id) is finished:
                del self.running[image_id]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("download of %s crashed: %r", image_id, finished.exception())

        task.add_done_callback(done)
        return True

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

    async def _work(self) -> None:
        while True:
            image_id, seq = await self._queue.get()
            me = asyncio.current_task()
            if self._stopping or me is None:
                return  # draining: the image stays queued in the database for the next start
            self._busy.add(me)
            task = asyncio.create_task(self._job(image_id, seq), name=f"download-{image_id}")
            self.running[image_id] = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
            except Exception:
                log.exception("download of %s crashed", image_id)
            finally:
                self._busy.discard(me)
                if self.running.get(image_id) is task:
                    del self.running[image_id]

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
