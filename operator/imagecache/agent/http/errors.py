"""The agent's HTTP errors, and the one place where domain errors become them.

Each `ApiError` is answered with its status by `middlewares.errors_middleware`::

    ApiError
     ├── NotFound            404  unknown image or bad id
     ├── BadRequest          400  image not active upstream, bad clear target, bad query
     ├── Unauthorized        401  missing or wrong token
     ├── Forbidden           403  a credential that may not do this (a Keystone user's peer hint)
     ├── QueueFull           429  ``max_queue`` images already wait (with ``Retry-After``)
     ├── PeerReadsBusy       429  ``peer_serve_limit`` peer transfers already run (``Retry-After``)
     ├── BadGateway          502  the upstream answered, but its answer cannot be used
     └── UpstreamUnavailable 503  the upstream could not be asked right now, or refused us

`to_api_error` translates the layers' own errors — the cache's `cache.errors.CacheError`, the
upstream's `upstream.port.UpstreamError` and `upstream.index.InvalidQuery` — for every view
alike (`from_upstream` is its upstream half, for a view that must answer before the
middleware could). An upstream answer the agent refuses (`BadUpstreamAnswer`: a redirect,
metadata over the limit, an unknown digest algorithm) is 502 wherever it surfaces: the
upstream did answer, and asking again gets the same answer, which is what 502 Bad Gateway
says; 503 tells a client the service may answer later (a transient upstream failure, or the
upstream refusing the agent's own credentials, which an operator can fix).
"""

from __future__ import annotations

from imagecache.agent.cache import errors as cache_errors
from imagecache.agent.upstream.index import InvalidQuery
from imagecache.agent.upstream.port import (
    BadUpstreamAnswer,
    ImageNotFound,
    TransientUpstreamError,
    UpstreamError,
)

DomainError = cache_errors.CacheError | UpstreamError | InvalidQuery


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read-only default, replaced per instance


class NotFound(ApiError):
    status = 404
    title = "Not Found"


class BadRequest(ApiError):
    status = 400
    title = "Bad Request"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"


class QueueFull(ApiError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class PeerReadsBusy(QueueFull):
    """Too many other agents read from this one right now; the asker tries another source."""


class UpstreamUnavailable(ApiError):
    status = 503
    title = "Service Unavailable"


class BadGateway(ApiError):
    status = 502
    title = "Bad Gateway"


def to_api_error(error: DomainError, image_id: str | None) -> ApiError:
    """The HTTP answer to a domain error (`image_id`: the request's, when it names one)."""
    if isinstance(error, UpstreamError):
        return from_upstream(error, image_id)
    if isinstance(error, InvalidQuery):
        return BadRequest(str(error))
    if isinstance(error, cache_errors.UnknownImage):
        return NotFound(str(error))
    if isinstance(error, cache_errors.ImageNotActive):
        return BadRequest(str(error))
    if isinstance(error, cache_errors.QueueFull):
        return QueueFull(str(error), retry_after=error.retry_after)
    return UpstreamUnavailable(str(error))  # NoRoom, or a cache error added later


def from_upstream(error: UpstreamError, image_id: str | None) -> ApiError:
    """What a request that needed the upstream answers when the upstream failed it."""
    image = f"image {image_id}" if image_id else "the request"
    if isinstance(error, ImageNotFound):
        return NotFound(f"No image with id {image_id!r}" if image_id else str(error))
    if isinstance(error, BadUpstreamAnswer):
        return BadGateway(f"Upstream answer for {image} cannot be used: {error}")
    if isinstance(error, TransientUpstreamError):
        return UpstreamUnavailable(f"Upstream unavailable: {error}")
    # e.g. our upstream token is refused: fixable upstream, so worth asking again later
    return UpstreamUnavailable(f"Upstream refused {image}: {error}")
