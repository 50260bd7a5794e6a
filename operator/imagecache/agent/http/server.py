"""Serve the agent until a stop is requested: one event loop, the agent's own signal handling.

Why not ``web.run_app``: it turns SIGTERM into an exception (``GracefulExit``) raised from a
signal callback. When that callback runs in the same loop iteration as a future completing
under ``run_until_complete``, the future's already-scheduled "stop the loop" callback survives
into run_app's next ``run_until_complete`` and stops it early: "Event loop stopped before Future
completed". And a signal that arrives before run_app installs its handlers (during imports or
settings) kills the process with status -15. Here a signal only sets a flag (`signals.StopRequest`),
from the first line of ``main`` to the last, and `serve` awaits it like any other event.

Shutdown order (`serve`): stop accepting, then aiohttp's runner cleanup — ``on_shutdown`` (the
cache drains downloads for up to ``drain_timeout``), in-flight requests get ``drain_timeout``
to finish, then the cleanup contexts close workers and database.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from imagecache.agent.http.app import create_app
from imagecache.agent.http.appkeys import METRICS
from imagecache.agent.http.connections import (
    ConnectionGuard,
    ConnectionLimits,
    RateLimitedLog,
    accept_backlog,
    default_max_connections,
)
from imagecache.agent.settings import AgentSettings
from imagecache.agent.signals import StopRequest

log = logging.getLogger("imagecache.agent")


def connection_limits(settings: AgentSettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_connections=settings.max_connections
        or default_max_connections(workers=settings.workers),
        header_timeout=settings.header_timeout,
    )


async def serve(settings: AgentSettings, stop: StopRequest) -> None:
    """Open the cache, listen, and serve until `stop`; then drain and close everything."""
    loop = asyncio.get_running_loop()
    stop.attach(loop)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.drain_timeout)
    guard: ConnectionGuard | None = None
    try:
        await runner.setup()  # opens the cache (cleanup contexts)
        if stop.requested:
            return
        server = runner.server
        assert server is not None
        metrics = app[METRICS]
        limits = connection_limits(settings)
        guard = ConnectionGuard(
            server,
            limits,
            warnings=RateLimitedLog(logging.getLogger("imagecache.agent.http.connections")),
            on_refused=lambda reason: metrics.connections_refused.labels(reason).inc(),
        )
        metrics.connections_open.set_function(lambda: float(guard.open_connections))
        loop.set_exception_handler(guard.exception_handler)
        listener = await loop.create_server(
            guard,
            None if settings.host == "::" else settings.host,  # "::" = both families
            settings.port,
            backlog=accept_backlog(limits.max_connections),
            reuse_address=True,
        )
        log.info(
            "listening on %s (at most %d connections)",
            settings.listen,
            limits.max_connections,
            extra={"event": "listening"},
        )
        try:
            await stop.wait()
            log.info("stopping", extra={"event": "stopping"})
        finally:
            listener.close()
    finally:
        await runner.cleanup()
        if guard is not None:
            guard.close_all()
        stop.detach(loop)
