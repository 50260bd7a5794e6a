"""SIGTERM and SIGINT as a stop request, noted from the first line of ``main`` to the last.

Only ``signal`` at import time: ``main`` imports this before anything heavy, so a signal that
arrives while aiohttp and pydantic are still being imported is noted instead of killing the
process.
Before the event loop runs a plain ``signal.signal`` handler sets a flag; while it runs,
asyncio's handlers (``add_signal_handler``) also wake whoever awaits `StopRequest.wait`.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio takes ~50-130 ms to import: only once the handlers are in place
    import asyncio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """SIGTERM or SIGINT, noted from `install()` on; awaitable once a loop runs (`attach`)."""

    def __init__(self) -> None:
        self.requested = False
        self._event: asyncio.Event | None = None

    def install(self) -> None:
        """Note the signals from now on (before any event loop exists)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._noted)

    def _noted(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def _set(self) -> None:
        self.requested = True
        if self._event is not None:
            self._event.set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the running loop on a signal (asyncio's handlers replace `install`'s)."""
        import asyncio

        self._event = asyncio.Event()
        if self.requested:
            self._event.set()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._set)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Back to noting only: a signal while the loop closes must not kill the process."""
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        self._event = None
        self.install()

    async def wait(self) -> None:
        assert self._event is not None, "attach() first"
        await self._event.wait()
