"""``GET /v2/images/{id}`` and ``GET /v2/images``: image metadata as the upstream Glance shows it.

The stock ``openstack`` CLI and openstacksdk look an image up (by id, then by name) before any
cache or download command, so one agent must answer these as Glance does. The answers come from
the upstream's index through `ImageCache`; these views only give Glance's 404 wording, every
other error is mapped where all are (`errors.to_api_error`).
"""

from __future__ import annotations

from aiohttp import web

from imagecache.agent.cache.errors import UnknownImage
from imagecache.agent.http.appkeys import CACHE
from imagecache.agent.http.errors import NotFound
from imagecache.agent.upstream.port import ImageNotFound
from imagecache.core.ids import is_valid_image_id


async def show_image(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if not is_valid_image_id(image_id):  # before any upstream path exists (SPEC §2.3)
        raise NotFound(f"No image found with ID {image_id}")
    try:
        doc = await request.app[CACHE].image_document(image_id)
    except (ImageNotFound, UnknownImage) as error:
        raise NotFound(f"No image found with ID {image_id}") from error
    return web.json_response(doc)


async def list_images(request: web.Request) -> web.Response:
    try:
        doc = await request.app[CACHE].image_documents(list(request.query.items()))
    except ImageNotFound as error:
        raise NotFound("The resource could not be found.") from error
    return web.json_response(doc)


def image_routes() -> list[web.RouteDef]:
    """The two metadata routes (read-only: other methods get 405 with ``Allow: GET``)."""
    return [
        web.get("/v2/images", list_images, allow_head=False),
        web.get("/v2/images/{image_id}", show_image, allow_head=False),
    ]
