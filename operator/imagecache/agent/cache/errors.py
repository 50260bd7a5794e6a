"""The cache layer's own errors: what `ImageCache` (the facade) raises to its callers.

The HTTP layer maps each to one status in `http/errors.py` (`to_http`); nothing here knows
HTTP. Upstream failures are not wrapped: they reach the caller as the upstream's own
`upstream.port.UpstreamError` tree, mapped in the same one place::

    CacheError
     ├── UnknownImage       the id is not a valid image id, or the upstream has no such image
     ├── ImageNotActive     the upstream has the image but not its data (status not active)
     ├── QueueFull          ``max_queue`` images already wait (`retry_after` seconds)
     └── NoRoom             a download found no room under ``max_size`` within
                            ``room_wait_timeout`` (`needed`: bytes that could not be freed)
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of the cache layer's errors."""


class UnknownImage(CacheError):
    """A bad image id, or one the upstream does not know."""


class ImageNotActive(CacheError):
    """The upstream knows the image, but its status is not ``active`` (no data to cache)."""


class QueueFull(CacheError):
    """``max_queue`` images already wait or download."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoRoom(CacheError):
    """No room was found under ``max_size`` within ``room_wait_timeout``."""

    def __init__(self, message: str, *, needed: int) -> None:
        super().__init__(message)
        self.needed = needed
