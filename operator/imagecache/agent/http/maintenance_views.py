"""Glance 2026's cache maintenance calls (Glance 33, API v2.18), over `ImageCache`.

- ``POST /v2/cache/prune``: `ImageCache.prune`; answers
  ``{"total_files_pruned": n, "total_bytes_pruned": n}``.
- ``POST /v2/cache/clean``: `ImageCache.clean`; 200 with an empty body.
- ``GET /v2/cache/nodes/{id}``: ``[self_url]`` when this agent holds the image, ``[]`` when
  not, 404 when the upstream does not know it.
"""

from __future__ import annotations

from aiohttp import web

from imagecache.agent.cache.errors import UnknownImage
from imagecache.agent.http.appkeys import CACHE, SETTINGS
from imagecache.agent.http.errors import NotFound
from imagecache.core.ids import is_valid_image_id


async def prune_view(request: web.Request) -> web.Response:
    files, freed = await request.app[CACHE].prune()
    return web.json_response({"total_files_pruned": files, "total_bytes_pruned": freed})


async def clean_view(request: web.Request) -> web.Response:
    await request.app[CACHE].clean()
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
    except UnknownImage as error:
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
