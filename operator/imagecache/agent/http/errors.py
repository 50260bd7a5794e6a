"""Domain errors of the agent's HTTP API, each mapped to one status in `middlewares.py`::

ApiError
 ├── NotFound            404  unknown image or bad id
 ├── BadRequest          400  image not active upstream, bad clear target
 ├── Unauthorized        401  missing or wrong token
 ├── Forbidden           403  a credential that may not do this (a Keystone user's peer hint)
 ├── QueueFull           429  ``max_queue`` images already wait (with ``Retry-After``)
 ├── PeerReadsBusy       429  ``peer_serve_limit`` peer transfers already run (``Retry-After``)
 ├── BadGateway          502  the upstream's answer cannot be used (a redirect, bad metadata)
 └── UpstreamUnavailable 503  the upstream could not be asked right now, or refused us

`from_upstream` is the one translation of an `upstreams.UpstreamError` into these.
"""

from __future__ import annotations

from imagecache.agent.upstream.port import (
    BadUpstreamAnswer,
    ImageNotFound,
    TransientUpstreamError,
    UpstreamError,
)


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


def from_upstream(error: UpstreamError, image_id: str) -> ApiError:
    """What a request that needed the upstream answers when the upstream failed it."""
    if isinstance(error, ImageNotFound):
        return NotFound(f"No image with id {image_id!r}")
    if isinstance(error, BadUpstreamAnswer):
        return BadGateway(f"Upstream answer for image {image_id} cannot be used: {error}")
    if isinstance(error, TransientUpstreamError):
        return UpstreamUnavailable(f"Upstream unavailable: {error}")
    # e.g. our upstream token is refused: fixable upstream, so worth asking again later
    return UpstreamUnavailable(f"Upstream refused image {image_id}: {error}")
