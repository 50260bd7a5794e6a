"""HTTP views: parse the request, call `ImageCache`, serialise. Routes are in `routes()`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from imagecache.agent.cache.facade import ClearTarget
from imagecache.agent.http.appkeys import CACHE, METRICS, SETTINGS
from imagecache.agent.http.errors import BadRequest, NotFound
from imagecache.agent.http.files import CachedFileResponse
from imagecache.agent.http.image_views import image_routes
from imagecache.agent.http.maintenance_views import cache_admin_routes
from imagecache.agent.http.middlewares import is_glance_client
from imagecache.agent.http.peer_views import admit_peer_read, peer_grant
from imagecache.agent.peer_policy import PEER_READ_HEADER
from imagecache.agent.upstream.port import UpstreamError
from imagecache.core.ids import is_valid_image_id

log = logging.getLogger("imagecache.agent.http")

CLEAR_HEADER = "x-image-cache-clear-target"
_ZERO_SUFFIX = re.compile(r"bytes=\s*-0+\s*")
LATEST_MINOR = 18  # Glance 33 (2026.2): v2.18 adds cache prune, clean and nodes


def _versions(request: web.Request) -> dict[str, Any]:
    base = f"{request.scheme}://{request.host}/v2/"
    return {
        "versions": [
            {
                "id": f"v2.{minor}",
                "status": "CURRENT" if minor == LATEST_MINOR else "SUPPORTED",
                "links": [{"rel": "self", "href": base}],
            }
            for minor in range(LATEST_MINOR, -1, -1)
        ]
    }


async def root(request: web.Request) -> web.Response:
    return web.json_response(_versions(request), status=300)


async def versions(request: web.Request) -> web.Response:
    return web.json_response(_versions(request))


async def list_cache(request: web.Request) -> web.Response:
    listing = request.app[CACHE].listing()
    if is_glance_client(request):  # it would print the per-image objects as queued ids
        listing = {key: listing[key] for key in ("cached_images", "queued_images")}
    return web.json_response(listing)


async def queue_image(request: web.Request) -> web.Response:
    # The body is never read: glanceclient sends Content-Type: application/json with no body.
    await request.app[CACHE].queue(request.match_info["image_id"], peer=peer_grant(request))
    return web.Response(status=202)


async def image_report(request: web.Request) -> web.Response:
    return web.json_response(request.app[CACHE].report(request.match_info["image_id"]))


async def delete_image(request: web.Request) -> web.Response:
    await request.app[CACHE].delete(request.match_info["image_id"])
    return web.Response(status=204)


async def clear_cache(request: web.Request) -> web.Response:
    value = request.headers.get(CLEAR_HEADER, "").strip()
    targets: dict[str, ClearTarget] = {"": "all", "cache": "cache", "queue": "queue"}
    if value not in targets:
        raise BadRequest(f"{CLEAR_HEADER} must be 'cache' or 'queue', not {value!r}")
    await request.app[CACHE].clear(targets[value])
    return web.Response(status=204)


async def image_file(request: web.Request) -> web.StreamResponse:
    """`GET/HEAD /v2/images/{id}/file`: from disk when cached, else streamed from upstream."""
    image_id = request.match_info["image_id"]
    if not is_valid_image_id(image_id):
        raise NotFound(f"No image with id {image_id!r}")
    cache = request.app[CACHE]
    read = request.method == "GET"  # HEAD neither counts a hit nor queues the image
    served = await cache.open_cached(image_id, read=read)
    if PEER_READ_HEADER in request.headers:  # another agent: only what is cached here
        served = admit_peer_read(request, served)
    if served is not None:
        if _ZERO_SUFFIX.fullmatch(request.headers.get("Range", "")):
            # RFC 9110 §14.1.1: a zero-length suffix is unsatisfiable (416); aiohttp reads
            # "-0" as "0-" and would send the whole file with 206.
            served.release()
            return web.Response(status=416, headers={"Content-Range": f"bytes */{served.size}"})
        headers = {"Content-Type": "application/octet-stream"}
        if served.checksum:
            headers["Content-MD5"] = served.checksum
        idle = request.app[SETTINGS].serve_idle_timeout
        return CachedFileResponse(served, idle_timeout=idle, headers=headers)
    miss = await cache.read_through(image_id, read=read)
    meta = miss.meta
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if meta.size is not None:
        response.content_length = meta.size
    if meta.checksum:
        response.headers["Content-MD5"] = meta.checksum
    if not read:
        await response.prepare(request)
        return response
    sent = 0
    try:
        async with miss.open() as stream:
            await response.prepare(request)
            async for chunk in stream.chunks():
                sent += len(chunk)
                if meta.size is not None and sent > meta.size:
                    break  # more than promised: these bytes cannot be trusted
                await response.write(chunk)
    except UpstreamError:
        if not response.prepared:
            raise  # answered by the errors middleware, as every upstream error is
        sent = -1
    except ConnectionError as error:  # the client went away: nobody is left to answer
        log.info(
            "client went away after %d bytes of %s: %s",
            sent,
            request.path,
            error,
            extra={"event": "client_gone"},
        )
        return response
    if sent < 0 or (meta.size is not None and sent != meta.size):
        # Short, long or broken: the client must see a failed transfer, not wait for bytes
        # that will never come (its Content-Length was promised).
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    checks = await cache.readiness()
    ok = all(checks.values())
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def package_json(name: str) -> dict[str, Any]:
    """A JSON document shipped in this package (``openapi.json``, ``glance-schemas.json``)."""
    doc: dict[str, Any] = json.loads(resources.files("imagecache.agent").joinpath(name).read_text())
    return doc


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(package_json("openapi.json"))


def schema_routes() -> list[web.RouteDef]:
    """`GET /v2/schemas/...`: python-glanceclient fetches these three before it uses v2 at all.

    If none of them answers, the stock CLI falls back to the v1 API, which has no cache
    commands; so the agent serves a Glance-shaped subset (the image fields it reads upstream).
    """

    def view(schema: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(schema)

        return handler

    return [
        web.get(f"/v2/schemas/{resource}", view(schema), allow_head=False)
        for resource, schema in package_json("glance-schemas.json").items()
    ]


def routes() -> list[web.RouteDef]:
    """Every route; other methods on these paths get 405 with ``Allow`` from the router."""
    return [
        web.get("/", root, allow_head=False),
        web.get("/versions", versions, allow_head=False),
        *schema_routes(),
        web.get("/v2/cache", list_cache, allow_head=False),
        web.delete("/v2/cache", clear_cache),
        *cache_admin_routes(),
        web.get("/v2/cache/{image_id}", image_report, allow_head=False),
        web.put("/v2/cache/{image_id}", queue_image),
        web.delete("/v2/cache/{image_id}", delete_image),
        web.get("/v2/images/{image_id}/file", image_file),
        *image_routes(),
        web.get("/healthz", healthz, allow_head=False),
        web.get("/readyz", readyz, allow_head=False),
        web.get("/metrics", metrics, allow_head=False),
        web.get("/openapi.json", openapi, allow_head=False),
    ]
