"""Domain errors of the agent's HTTP API, each mapped to one status in `middlewares.py`::

ApiError
 ├── NotFound            404  unknown image or bad id
 ├── BadRequest          400  image not active upstream, bad clear target
 ├── Unauthorized        401  missing or wrong token
 ├── QueueFull           429  ``max_queue`` images already wait (with ``Retry-After``)
 └── UpstreamUnavailable 503  the upstream could not be asked right now
"""

from __future__ import annotations


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


class QueueFull(ApiError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class UpstreamUnavailable(ApiError):
    status = 503
    title = "Service Unavailable"
