"""Bounded, timed client connections: a guard between the listening socket and aiohttp.

aiohttp accepts every connection it is offered and gives a client as long as it likes to send
its request head. A flood of idle sockets, or clients sending headers byte by byte (slowloris),
then hold file descriptors until the process hits its fd limit, where every failed
``accept()`` logs a traceback (hundreds of MB a minute) and ``/healthz`` stops answering.

`ConnectionGuard` is the protocol factory handed to ``loop.create_server``; each accepted
connection gets a `GuardedConnection` that forwards to aiohttp's own protocol (from the public
``web.Server`` factory) once admitted:

- at most ``max_connections`` connections are served. At the limit a newcomer first makes room
  by closing the oldest connection still sending its first request head (the slowest client);
- when none can be closed, up to `PROBE_RESERVE` more connections are admitted on probation:
  one whose request line asks for a probe path (``/healthz``, ``/readyz``, ``/metrics``) is
  served, any other is answered ``503`` and closed, so liveness answers under any flood;
- a connection whose first request head is not complete ``header_timeout`` seconds after it
  was accepted is closed;
- refusals, timeouts and ``accept()`` failures at the fd limit are logged as one warning per
  `LOG_INTERVAL` seconds with a count (`RateLimitedLog`), never one traceback each.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("imagecache.agent.http.connections")

PROBE_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics"})
PROBE_RESERVE = 8
"""Connections admitted beyond the limit, for probe requests only."""
LOG_INTERVAL = 10.0
"""Seconds between two warnings about the same kind of refused connection."""
HEAD_END = b"\r\n\r\n"
MAX_REQUEST_LINE = 8192
FD_RESERVE = 64
"""File descriptors kept free for the database, cache files, upstream sockets and threads."""
FDS_PER_CONNECTION = 2
"""A connection serving a cached image holds its socket and the open file."""
MAX_AUTO_CONNECTIONS = 4096

_REFUSAL_BODY = (
    b'{"code": "503 Service Unavailable", "title": "Service Unavailable", '
    b'"message": "Too many connections; try again."}'
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def default_max_connections(*, workers: int) -> int:
    """Connections the fd limit (``RLIMIT_NOFILE``, soft) leaves room for.

    Each served connection may hold two fds (socket and image file); `FD_RESERVE` plus four per
    worker stay free for everything else; capped at `MAX_AUTO_CONNECTIONS`, at least 4.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_AUTO_CONNECTIONS
    spare = soft - FD_RESERVE - 4 * workers - PROBE_RESERVE * FDS_PER_CONNECTION
    return max(4, min(MAX_AUTO_CONNECTIONS, spare // FDS_PER_CONNECTION))


def accept_backlog(max_connections: int) -> int:
    """The listen backlog, which asyncio also uses as the number of ``accept()`` calls per loop
    turn: each accepted socket holds an fd before its protocol runs, so a burst of connections
    may hold a few batches of them at once. Small enough to stay within the fds
    `default_max_connections` leaves spare, big enough for bursts of short requests."""
    return max(4, min(128, max_connections))


class RateLimitedLog:
    """One warning per kind per `interval` seconds, carrying how many events it stands for."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def note(self, kind: str, message: str) -> None:
        """Count one event of `kind`; log `message` (with the count) if the interval passed."""
        self._unreported[kind] = self._unreported.get(kind, 0) + 1
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            return
        count = self._unreported.pop(kind)
        self._last[kind] = now
        self._logger.warning(
            "%s (%d since the last such warning)", message, count, extra={"event": kind}
        )


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    """Connections served at once (more are admitted only for probes)."""
    header_timeout: float
    """Seconds a new connection has to send its first complete request head."""


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: admits, times and counts connections."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        limits: ConnectionLimits,
        *,
        warnings: RateLimitedLog,
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._factory = protocol_factory
        self.limits = limits
        self._warnings = warnings
        self._on_refused = on_refused
        self._open: dict[GuardedConnection, None] = {}  # in order of arrival

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self)

    def admit(self, connection: GuardedConnection) -> bool | None:
        """True: serve; None: on probation (probes only); False: refuse."""
        if len(self._open) >= self.limits.max_connections:
            self._make_room()
        if len(self._open) < self.limits.max_connections:
            self._open[connection] = None
            return True
        if len(self._open) < self.limits.max_connections + PROBE_RESERVE:
            self._open[connection] = None
            return None
        self.refused("limit", "refused a connection: max_connections reached")
        return False

    def _make_room(self) -> None:
        for connection in self._open:
            if connection.head_pending:
                self.refused("evicted", "closed the oldest connection still sending its headers")
                connection.drop()
                return

    def close_all(self) -> None:
        """Abort every connection still open (after the server's own shutdown)."""
        for connection in list(self._open):
            connection.drop()

    def closed(self, connection: GuardedConnection) -> None:
        self._open.pop(connection, None)

    def make_protocol(self) -> asyncio.Protocol:
        return self._factory()

    def refused(self, reason: str, message: str) -> None:
        self._on_refused(reason)
        self._warnings.note(f"connection_{reason}", message)

    def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: out-of-fd ``accept()`` failures are rate-limited."""
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _OUT_OF_FDS:
            self.refused("accept_failed", f"cannot accept connections: {error.strerror}")
            return
        loop.default_exception_handler(context)


class GuardedConnection(asyncio.Protocol):
    """One client connection: forwards to aiohttp's protocol once admitted."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held = b""  # bytes read while on probation
        self._tail = b""  # the last bytes of an unfinished head (HEAD_END may straddle reads)
        self._on_probation = False
        self.head_pending = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        admitted = self._guard.admit(self)
        if admitted is False:
            self._refuse()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._head_timed_out)
        if admitted:
            self._start_inner()
        else:
            self._on_probation = True

    def _start_inner(self) -> None:
        assert self._transport is not None
        self._inner = self._guard.make_protocol()
        self._inner.connection_made(self._transport)

    def _refuse(self) -> None:
        assert self._transport is not None
        self._guard.closed(self)  # its slot is free now, not when the close completes
        self._transport.write(_REFUSAL)
        self._transport.close()

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.head_pending:
            self._guard.refused("header_timeout", "closed a connection that sent no full head")
            self.drop()

    def drop(self) -> None:
        """Close at once (unsent bytes are discarded)."""
        self.head_pending = False  # never chosen twice
        self._guard.closed(self)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.head_pending:
            self._watch_head(data)
        if self._on_probation:
            self._held += data
            self._decide_probation()
        elif self._inner is not None:
            self._inner.data_received(data)

    def _watch_head(self, data: bytes) -> None:
        if HEAD_END in self._tail + data:
            self.head_pending = False
            self._tail = b""
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        else:
            self._tail = (self._tail + data)[-(len(HEAD_END) - 1) :]

    def _decide_probation(self) -> None:
        line, found, _ = self._held.partition(b"\r\n")
        if not found and len(self._held) < MAX_REQUEST_LINE:
            return  # wait for the whole request line
        parts = line.split(b" ")
        path = parts[1].partition(b"?")[0] if len(parts) == 3 else b""
        self._on_probation = False
        if path not in PROBE_PATHS:
            self._guard.refused("limit", "refused a request: max_connections reached")
            self.head_pending = False
            self._refuse()
            return
        held, self._held = self._held, b""
        self._start_inner()
        assert self._inner is not None
        self._inner.data_received(held)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
