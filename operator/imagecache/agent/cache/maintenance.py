"""Glance 2026's cache maintenance calls (Glance 33, API v2.18), over the agent's `ImageCache`.

- ``POST /v2/cache/prune``: evict least-recently-used cached images until the cache is within
  ``max_size`` (it only ever is over after ``max_size`` was lowered across a restart); answers
  ``{"total_files_pruned": n, "total_bytes_pruned": n}``. Images being served are kept.
- ``POST /v2/cache/clean``: delete the files that failed verification (``invalid/``) and the
  partial downloads (``incomplete/``) no download owns that were not written for
  ``stall_timeout``; 200 with an empty body.
- ``GET /v2/cache/nodes/{id}``: ``[self_url]`` when this agent holds the image, ``[]`` when
  not, 404 when the upstream does not know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Set
from pathlib import Path

from aiohttp import web

from imagecache.agent.cache.facade import ImageCache
from imagecache.agent.http.appkeys import CACHE, SETTINGS
from imagecache.agent.http.errors import NotFound
from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims
from imagecache.core.ids import is_valid_image_id


def prune_victims(
    *, cached: Iterable[Candidate], pinned: Set[str], used: int, max_size: int
) -> list[str]:
    """Least-recently-used images whose eviction brings `used` within `max_size`.

    When the images being served (`pinned`) keep the cache over the limit anyway, every other
    image goes (best effort, as Glance's pruner does).
    """
    candidates = list(cached)
    try:
        return choose_victims(
            cached=candidates, pinned=pinned, used=used, incoming=0, max_size=max_size
        )
    except DoesNotFit:
        ordered = sorted(candidates, key=lambda c: (c.last_accessed, c.image_id))
        return [c.image_id for c in ordered if c.image_id not in pinned]


def clean_directory(
    *, invalid: Path, incomplete: Path, live: Set[str], stalled_before: float
) -> int:
    """Delete ``invalid/*`` and the ownerless partials not written since `stalled_before`.

    Blocking (run in a thread). Returns how many files went.
    """
    removed = 0
    for directory, keep_recent in ((invalid, False), (incomplete, True)):
        with os.scandir(directory) as entries:
            files = [e for e in entries if e.is_file(follow_symlinks=False)]
        for entry in files:
            if keep_recent and (entry.name in live or entry.stat().st_mtime >= stalled_before):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


async def prune(cache: ImageCache) -> dict[str, int]:
    cached = {r.image_id: r for r in cache.records.in_state("cached")}
    victims = prune_victims(
        cached=(
            Candidate(r.image_id, r.size or 0, r.last_accessed or 0.0) for r in cached.values()
        ),
        pinned=cache.pinned(),
        used=cache.records.cached_bytes,
        max_size=cache.settings.max_size,
    )
    freed = sum(cached[v].size or 0 for v in victims)
    for image_id in victims:
        await cache.delete(image_id)
    return {"total_files_pruned": len(victims), "total_bytes_pruned": freed}


async def prune_view(request: web.Request) -> web.Response:
    return web.json_response(await prune(request.app[CACHE]))


async def clean_view(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    await asyncio.to_thread(
        clean_directory,
        invalid=cache.store.invalid,
        incomplete=cache.store.incomplete,
        live=cache.live_downloads(),
        stalled_before=time.time() - cache.settings.stall_timeout,
    )
    await asyncio.to_thread(cache.store.prune_invalid)  # counts what is left in invalid/
    return web.Response(status=200)


async def nodes_view(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if not is_valid_image_id(image_id):
        raise NotFound(f"Image {image_id} not found.")
    cache = request.app[CACHE]
    if cache.holds(image_id):
        return web.json_response([request.app[SETTINGS].self_url])
    try:
        await cache.check_upstream(image_id)
    except NotFound as error:
        raise NotFound(f"Image {image_id} not found.") from error
    return web.json_response([])


async def post_only(request: web.Request) -> web.Response:
    """Any other method on prune/clean: 405 (Glance does not read them as image ids)."""
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def cache_admin_routes() -> list[web.RouteDef]:
    """Registered before ``/v2/cache/{image_id}``: ``PUT /v2/cache/prune`` is a 405 with
    ``Allow: POST``, as in Glance, not the queueing of an image called "prune"."""
    return [
        web.post("/v2/cache/prune", prune_view),
        web.route("*", "/v2/cache/prune", post_only),
        web.post("/v2/cache/clean", clean_view),
        web.route("*", "/v2/cache/clean", post_only),
        web.get("/v2/cache/nodes/{image_id}", nodes_view, allow_head=False),
    ]
