"""A read deadline for responses the kernel sends for us (cached files go out by ``sendfile``).

A client that stops reading a cached image keeps the image pinned (never evicted) for as long as
its connection stays open, so a download that needs that room would wait on it. `read_deadline`
watches the connection while the file is sent: when the client has acknowledged no new byte for
``serve_idle_timeout`` seconds (its receive window stays shut), the connection is aborted — the
send fails, the response ends and its pin is released.

Progress is what the peer's TCP acknowledged (``tcpi_bytes_acked`` of Linux's ``TCP_INFO``,
kernel 4.1+), read every ``idle/4`` seconds (at most every second): that counts bytes the
client's kernel took, whatever writes them (``sendfile`` gives user space no progress to
watch). Where ``TCP_INFO`` cannot be read (not Linux, not TCP) no deadline applies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger("imagecache.agent.http")

BYTES_ACKED = slice(120, 128)  # struct tcp_info: __u64 tcpi_bytes_acked
MAX_POLL = 1.0


def acked_bytes(sock: Any) -> int | None:
    """Bytes the peer acknowledged on `sock`, or None when the kernel cannot say."""
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except (OSError, AttributeError, TypeError):
        return None
    if len(info) < BYTES_ACKED.stop:
        return None
    return int.from_bytes(info[BYTES_ACKED], sys.byteorder)


@asynccontextmanager
async def read_deadline(
    transport: asyncio.BaseTransport | None, *, idle: float, what: str
) -> AsyncIterator[None]:
    """While the block runs: abort `transport` once its peer read nothing for `idle` seconds."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or acked_bytes(sock) is None:
        yield
        return
    watchdog = asyncio.create_task(_watch(transport, sock, idle=idle, what=what))
    try:
        yield
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)


async def _watch(transport: asyncio.BaseTransport, sock: Any, *, idle: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    last = acked_bytes(sock)
    since = loop.time()
    while not transport.is_closing():
        await asyncio.sleep(min(MAX_POLL, idle / 4))
        now, acked = loop.time(), acked_bytes(sock)
        if acked is None:
            return
        if acked != last:
            last, since = acked, now
        elif now - since >= idle:
            log.info(
                "disconnecting a client that read nothing of %s for %.0fs",
                what,
                idle,
                extra={"event": "client_idle"},
            )
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            else:
                transport.close()
            return
