"""`create_app(settings)`: the one app factory, used by `main` and by tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from imagecache.agent.cache.facade import ImageCache
from imagecache.agent.http.appkeys import CACHE, METRICS, SETTINGS
from imagecache.agent.http.auth import AcceptedTokens, InboundAuth
from imagecache.agent.http.middlewares import auth_middleware, errors_middleware
from imagecache.agent.http.peer_views import PEER_SLOTS, PeerSlots
from imagecache.agent.http.views import routes
from imagecache.agent.keystone import Keystone, make_keystone
from imagecache.agent.metrics import AgentMetrics
from imagecache.agent.settings import AgentSettings
from imagecache.agent.token_file import TokenFile
from imagecache.agent.token_review import ApiAccess, TokenReviews
from imagecache.agent.upstream.auth import KeystoneAuth, StaticToken
from imagecache.agent.upstream.file import FileUpstream
from imagecache.agent.upstream.http import GlanceUpstream, HttpUpstream
from imagecache.agent.upstream.port import Upstream
from imagecache.core.podtokens import agent_audience, peer_audience


def create_app(settings: AgentSettings, *, upstream: Upstream | None = None) -> web.Application:
    """The agent's aiohttp application; the cache opens and closes with it (`cleanup_ctx`)."""
    tokens = (
        AcceptedTokens(TokenFile(settings.token_file)) if settings.token_file is not None else None
    )
    keystone = make_keystone(
        settings.os_cloud,
        roles=settings.roles,
        clock=time.time,
        timeout=settings.keystone_timeout,
    )
    reviews = make_token_reviews(settings)
    peer_reviews = make_token_reviews(settings, peer_audience)  # fleet fill: peer reads only
    inbound: InboundAuth | None = keystone if settings.auth == "keystone" else reviews
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware(tokens, inbound, peer_reviews)],
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
            keystone=keystone,
        ),
        metrics,
    )
    app[PEER_SLOTS] = PeerSlots(settings.peer_serve_limit)
    metrics.peer_serving.set_function(lambda: float(app[PEER_SLOTS].in_use))
    app.add_routes(routes())
    app.cleanup_ctx.append(_threads)
    app.cleanup_ctx.append(_cache)
    app.on_shutdown.append(_drain)
    for closable in (keystone, reviews, peer_reviews):
        if closable is not None:
            app.cleanup_ctx.append(_closing(closable))
    return app


def make_token_reviews(
    settings: AgentSettings, audience: Callable[[str], str] = agent_audience
) -> TokenReviews | None:
    """The TokenReview judge of ``auth = kubernetes`` (None in the other modes) for this pod's
    `audience`: the agent's own, or (`peer_audience`) that of other agents' peer reads."""
    if settings.auth != "kubernetes":
        return None
    assert settings.pod_uid is not None and settings.operator_service_account is not None
    access = (
        ApiAccess.from_kubeconfig(settings.kubeconfig)
        if settings.kubeconfig is not None
        else ApiAccess.in_cluster()
    )
    return TokenReviews(
        access,
        audience=audience(settings.pod_uid),
        username=settings.operator_service_account,
        clock=time.time,
    )


def _closing(closable: Keystone | TokenReviews) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        await closable.close()

    return context


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


async def _drain(app: web.Application) -> None:
    """Shutdown: downloads running get ``drain_timeout`` to finish (`ImageCache.drain`)."""
    await app[CACHE].drain(app[SETTINGS].drain_timeout)


async def _cache(app: web.Application) -> AsyncIterator[None]:
    await app[CACHE].open()
    yield
    await app[CACHE].close()


def make_upstream(
    url: str,
    *,
    stall_timeout: float,
    token_file: Path | None,
    keystone: Keystone | None = None,
) -> Upstream:
    """The upstream named by the ``upstream`` setting (already validated).

    With a `keystone` (setting ``os_cloud``) a Glance upstream gets the agent's Keystone token,
    and ``glance://`` its endpoint from the catalog; otherwise the token of `token_file`.
    """
    parts = urlsplit(url)
    token = StaticToken(TokenFile(token_file) if token_file is not None else None)
    if parts.scheme == "file":
        return FileUpstream(Path(parts.path))
    if parts.scheme in ("glance", "glance+http", "glance+https"):
        if keystone is None:
            return GlanceUpstream(
                url.removeprefix("glance+"),
                stall_timeout=stall_timeout,
                auth=token,
            )
        auth = KeystoneAuth(keystone)
        return GlanceUpstream(
            "" if parts.scheme == "glance" else url.removeprefix("glance+"),
            endpoint=auth.endpoint,
            stall_timeout=stall_timeout,
            auth=auth,
        )
    return HttpUpstream(url, stall_timeout=stall_timeout, auth=token)
