"""`create_app(settings)`: the one app factory, used by `main` and by tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from imagecache.agent.appkeys import CACHE, METRICS, SETTINGS
from imagecache.agent.auth import TokenFile
from imagecache.agent.cache import ImageCache
from imagecache.agent.metrics import AgentMetrics
from imagecache.agent.middlewares import auth_middleware, errors_middleware
from imagecache.agent.settings import AgentSettings
from imagecache.agent.upstream_file import FileUpstream
from imagecache.agent.upstream_http import GlanceUpstream, HttpUpstream, read_token
from imagecache.agent.upstreams import Upstream
from imagecache.agent.views import routes


def create_app(settings: AgentSettings, *, upstream: Upstream | None = None) -> web.Application:
    """The agent's aiohttp application; the cache opens and closes with it (`cleanup_ctx`)."""
    tokens = TokenFile(settings.token_file) if settings.token_file is not None else None
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware(tokens)],
        handler_args={"max_field_size": 16384, "max_line_size": 16384},
    )
    metrics = AgentMetrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CACHE] = ImageCache(
        settings,
        upstream
        or make_upstream(
            settings.upstream,
            stall_timeout=settings.stall_timeout,
            token_file=settings.upstream_token_file,
        ),
        metrics,
    )
    app.add_routes(routes())
    app.cleanup_ctx.append(_threads)
    app.cleanup_ctx.append(_cache)
    return app


async def _threads(app: web.Application) -> AsyncIterator[None]:
    """Enough threads for every worker to read, hash twice and write at once."""
    executor = ThreadPoolExecutor(
        max_workers=max(8, app[SETTINGS].workers * 4 + 4), thread_name_prefix="io"
    )
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    yield
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))
    executor.shutdown(wait=False, cancel_futures=True)


async def _cache(app: web.Application) -> AsyncIterator[None]:
    await app[CACHE].open()
    yield
    await app[CACHE].close()


def make_upstream(url: str, *, stall_timeout: float, token_file: Path | None) -> Upstream:
    """The upstream named by the ``upstream`` setting (already validated)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileUpstream(Path(parts.path))
    if parts.scheme in ("glance+http", "glance+https"):
        base = url.removeprefix("glance+")
        return GlanceUpstream(base, stall_timeout=stall_timeout, token=read_token(token_file))
    return HttpUpstream(url, stall_timeout=stall_timeout, token=read_token(token_file))
