"""The operator's poll pace: ``poll_interval`` stretched while the process is saturated.

`PollPace.run` samples, every `SAMPLE_PERIOD`, the event loop's lag (how late a timer fires:
the time every ready callback waited behind the others) and how busy the process was over the
last `BUSY_WINDOW` (its CPU seconds per wall second, `time.process_time`), and feeds both to
`core.pace.next_stretch`. `interval` is what the agent poller and the reconciler use as the
poll interval; with no sampling running (tests driving `tick` by hand) it stays
``poll_interval``. The stretch, the last lag and the busy fraction are exported as metrics
(`OperatorMetrics.poll_stretch`, ``loop_lag``, ``busy``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from imagecache.controller.settings import OperatorSettings
from imagecache.core.pace import Load, PacePolicy, next_stretch

SAMPLE_PERIOD = 0.1
"""Seconds between two samples."""

BUSY_WINDOW = 10
"""Samples the busy fraction is measured over (one second): one busy burst is not saturation."""


class PollPace:
    """The current poll interval: the configured one, stretched under load."""

    def __init__(
        self,
        poll_interval: float,
        *,
        policy: PacePolicy,
        monotonic: Callable[[], float] = time.monotonic,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self.base = poll_interval
        self.policy = policy
        self.stretch = 1.0
        self.lag = 0.0
        self.busy = 0.0
        self._monotonic = monotonic
        self._cpu_time = cpu_time

    @property
    def interval(self) -> float:
        """Seconds between two polls of one agent now."""
        return self.base * self.stretch

    def observe(self, load: Load) -> None:
        """One sample of the process's load."""
        self.lag = load.lag
        self.busy = load.busy
        self.stretch = next_stretch(self.stretch, load, self.policy)

    async def run(self) -> None:
        """Sample until cancelled."""
        window: collections.deque[tuple[float, float]] = collections.deque(maxlen=BUSY_WINDOW + 1)
        window.append((self._monotonic(), self._cpu_time()))
        while True:
            before = self._monotonic()
            await asyncio.sleep(SAMPLE_PERIOD)
            now = self._monotonic()
            window.append((now, self._cpu_time()))
            (first_wall, first_cpu), (last_wall, last_cpu) = window[0], window[-1]
            busy = (last_cpu - first_cpu) / max(last_wall - first_wall, 1e-9)
            self.observe(Load(lag=max(0.0, now - before - SAMPLE_PERIOD), busy=busy))

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> PollPace:
        """The pace of ``poll_interval``, stretched at most ``max_poll_stretch`` times."""
        return cls(settings.poll_interval, policy=PacePolicy(cap=settings.max_poll_stretch))
