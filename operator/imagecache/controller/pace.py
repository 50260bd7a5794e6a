"""The operator's poll pace: ``poll_interval`` stretched while its event loop lags (issue 14).

`PollPace.run` samples the event loop's lag every `SAMPLE_PERIOD` (how late a timer fires: the
time every ready callback waited behind the others) and feeds it to `core.pace.next_stretch`.
`interval` is what the agent poller and the reconciler use as the poll interval; with no
sampling running (tests driving `tick` by hand) it stays ``poll_interval``. The stretch and the
last lag are exported as metrics (`OperatorMetrics.poll_stretch`, ``loop_lag``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from imagecache.controller.settings import OperatorSettings
from imagecache.core.pace import PacePolicy, next_stretch

SAMPLE_PERIOD = 0.1
"""Seconds between two lag samples."""


class PollPace:
    """The current poll interval: the configured one, stretched under load."""

    def __init__(
        self,
        poll_interval: float,
        *,
        policy: PacePolicy,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = poll_interval
        self.policy = policy
        self.stretch = 1.0
        self.lag = 0.0
        self._monotonic = monotonic

    @property
    def interval(self) -> float:
        """Seconds between two polls of one agent now."""
        return self.base * self.stretch

    def observe(self, lag: float) -> None:
        """One sample of the loop's lag."""
        self.lag = lag
        self.stretch = next_stretch(self.stretch, lag, self.policy)

    async def run(self) -> None:
        """Sample the loop's lag until cancelled."""
        while True:
            before = self._monotonic()
            await asyncio.sleep(SAMPLE_PERIOD)
            self.observe(max(0.0, self._monotonic() - before - SAMPLE_PERIOD))

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> PollPace:
        """The pace of ``poll_interval``, stretched at most ``max_poll_stretch`` times."""
        return cls(settings.poll_interval, policy=PacePolicy(cap=settings.max_poll_stretch))
