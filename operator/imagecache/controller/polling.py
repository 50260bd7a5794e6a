"""Polling the agents: one ``GET /v2/cache`` per agent per interval, each on its own.

`AgentPoller` owns the agents' latest answers (`reports`) and which requests look at which
agent and image. An agent is polled every ``poll_interval`` while any request has a target in
flight there (Queued, Caching, Pending), and once more whenever a request waits for its next
answer (`want`: a new target, a recheck, the end of a backoff). Each GET runs as its own task
with a deadline, at most one in flight per agent; nothing waits for all of them. As each answer
arrives it is compared with the agent's previous one (`core.listings`) and only the requests
whose image's state changed, or that waited for this answer, are handed to `on_change`; those
whose progress alone moved (queue position, bytes) to `on_progress`.

A failing agent is polled again with per-agent exponential backoff (the keyed `WorkQueue`).
The interval is asked of `interval` at each scheduling: the loop's `controller.pace.PollPace`
stretches it while the operator is saturated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from imagecache.controller.agents import AgentPort
from imagecache.controller.errors import AgentError, AgentUnreachable
from imagecache.controller.reconciling import AgentReport, Interest
from imagecache.core.listings import Signature, changed_images, image_signatures
from imagecache.core.workqueue import WorkQueue

logger = logging.getLogger("imagecache.controller.polling")

K = TypeVar("K", bound=Hashable)


class AgentPoller(Generic[K]):
    """Polls the agents requests care about; tells which requests an answer changed."""

    def __init__(
        self,
        *,
        agents: AgentPort,
        poll_interval: float,
        deadline: float,
        backoff: float,
        backoff_cap: float,
        on_change: Callable[[set[K]], None],
        on_progress: Callable[[set[K]], None] | None = None,
        interval: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._agents = agents
        self._interval_of = interval or (lambda: poll_interval)
        self._deadline = deadline
        self._on_change = on_change
        self._on_progress = on_progress or on_change
        self._monotonic = monotonic
        self._queue: WorkQueue[str] = WorkQueue(
            base_delay=max(backoff, poll_interval), max_delay=max(backoff_cap, poll_interval)
        )
        self.reports: dict[str, AgentReport] = {}
        self._signatures: dict[str, dict[str, Signature] | str] = {}
        self._interest: dict[str, dict[str, set[K]]] = {}
        self._active: dict[str, set[K]] = {}
        self._waiting: dict[str, set[K]] = {}
        self._by_key: dict[K, tuple[Interest, ...]] = {}
        self._pod_uids: dict[str, str] = {}  # the pod behind each agent, for its credential
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.gets: dict[str, int] = {}

    # -- who looks at what -----------------------------------------------------------------------

    def register(self, key: K, interest: Iterable[Interest]) -> None:
        """The request's targets now (replacing what it had): agents, images, in flight or not."""
        new = tuple(interest)
        old = self._by_key.get(key, ())
        if new == old:
            return
        self._drop(key, old)
        if new:
            self._by_key[key] = new
        else:
            self._by_key.pop(key, None)
        for item in new:
            self._interest.setdefault(item.endpoint, {}).setdefault(item.image, set()).add(key)
            if item.pod_uid:
                self._pod_uids[item.endpoint] = item.pod_uid
            if item.active:
                active = self._active.setdefault(item.endpoint, set())
                if not active:  # newly in flight: polled every interval from its last answer
                    last = self.reports.get(item.endpoint)
                    if last is None:
                        self._queue.add(item.endpoint)
                    elif item.endpoint not in self._inflight:
                        self._queue.add_at(item.endpoint, last.started_at + self._interval_of())
                active.add(key)

    def unregister(self, key: K) -> None:
        """The request is gone."""
        self._drop(key, self._by_key.pop(key, ()))
        for waiting in self._waiting.values():
            waiting.discard(key)

    def _drop(self, key: K, interest: tuple[Interest, ...]) -> None:
        for item in interest:
            images = self._interest.get(item.endpoint)
            if images is not None:
                keys = images.get(item.image)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del images[item.image]
                if not images:
                    del self._interest[item.endpoint]
                    self._forget_agent(item.endpoint)
            active = self._active.get(item.endpoint)
            if active is not None:
                active.discard(key)
                if not active:
                    del self._active[item.endpoint]

    def _forget_agent(self, endpoint: str) -> None:
        """No request looks at this agent any more: drop its answers."""
        self.reports.pop(endpoint, None)
        self._signatures.pop(endpoint, None)
        self._pod_uids.pop(endpoint, None)
        self._queue.discard(endpoint)

    def want(self, key: K, endpoint: str) -> None:
        """`key` waits for the next answer of `endpoint`: ask it as soon as possible."""
        self._waiting.setdefault(endpoint, set()).add(key)
        if endpoint not in self._inflight:  # one in flight answers it
            self._queue.add(endpoint)

    # -- polling ---------------------------------------------------------------------------------

    def poll(self) -> int:
        """Start the GETs that are due now (never waits for them); how many were started."""
        now = self._monotonic()
        started = 0
        for endpoint in self._queue.take(now=now):
            if endpoint not in self._active and endpoint not in self._waiting:
                self._queue.done(endpoint)
                continue
            self._inflight[endpoint] = asyncio.create_task(
                self._get(endpoint), name=f"GET {endpoint}/v2/cache"
            )
            started += 1
        return started

    def next_due(self) -> float | None:
        """When the next GET is due (None: none scheduled)."""
        if self._queue.ready():
            return self._monotonic()
        return self._queue.next_due()

    @property
    def in_flight(self) -> int:
        """GETs running now."""
        return len(self._inflight)

    async def close(self) -> None:
        """Cancel the GETs in flight."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()

    async def _get(self, endpoint: str) -> None:
        started = self._monotonic()
        self.gets[endpoint] = self.gets.get(endpoint, 0) + 1
        answer: object
        try:
            answer = await asyncio.wait_for(
                self._agents.cache_report(endpoint, pod_uid=self._pod_uids.get(endpoint)),
                timeout=self._deadline,
            )
        except AgentError as error:
            answer = error
        except TimeoutError:
            answer = AgentUnreachable(
                f"GET /v2/cache: no answer within {self._deadline:g}s", endpoint=endpoint
            )
        except Exception as error:  # an agent must never take the poller down
            logger.exception("GET %s/v2/cache failed unexpectedly", endpoint)
            answer = AgentUnreachable(f"GET /v2/cache: {error!r}", endpoint=endpoint)
        finally:
            self._inflight.pop(endpoint, None)
            self._queue.done(endpoint)
        report = AgentReport(
            answer=answer,  # type: ignore[arg-type]
            started_at=started,
            completed_at=self._monotonic(),
        )
        self._apply(endpoint, report)

    def _apply(self, endpoint: str, report: AgentReport) -> None:
        """Store an answer, schedule the next GET, and hand over the requests it changed."""
        failed = isinstance(report.answer, AgentError)
        if endpoint in self._active:
            if failed:
                self._queue.add_rate_limited(endpoint, now=report.completed_at)
            else:
                self._queue.forget(endpoint)
                self._queue.add_at(endpoint, report.started_at + self._interval_of())
        elif not failed:
            self._queue.forget(endpoint)
        changed: set[K] = self._waiting.pop(endpoint, set())
        images = self._interest.get(endpoint, {})
        if not images and not changed:
            return  # nobody looks at this agent any more
        self.reports[endpoint] = report
        signature: dict[str, Signature] | str = (
            f"{type(report.answer).__name__}: {report.answer}"
            if isinstance(report.answer, AgentError)
            else image_signatures(report.answer)
        )
        before = self._signatures.get(endpoint)
        self._signatures[endpoint] = signature
        moved: set[K] = set()
        if isinstance(before, dict) and isinstance(signature, dict):
            differ = changed_images(before, signature)
            assert differ is not None
            for image in differ.state:
                changed |= images.get(image, set())
            for image in differ.progress:
                moved |= images.get(image, set())
        elif before != signature:
            for keys in images.values():
                changed |= keys
        self._on_change(changed)
        if moved - changed:
            self._on_progress(moved - changed)
