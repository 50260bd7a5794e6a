"""Reading an HTTP answer's body with a bound, for every client in the package.

The agent (upstream metadata documents, TokenReviews) and the operator (agent listings) read
answers from peers they do not trust: `read_bounded` stops as soon as a body is known to be
longer than the caller's limit, from its declared ``Content-Length`` or while it streams, so
a peer cannot make the reader hold more than `limit` bytes. Callers turn `BodyTooLarge` into
their own error.
"""

from __future__ import annotations

import aiohttp


class BodyTooLarge(ValueError):
    """An answer's body is longer than the caller reads."""


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` as soon as it is known to exceed `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"answer of {declared} bytes (at most {limit} read)")
    body = bytearray()
    while piece := await response.content.read(limit + 1 - len(body)):
        body += piece
        if len(body) > limit:
            raise BodyTooLarge(f"answer longer than {limit} bytes")
    return bytes(body)
