"""Fleet fill at the HTTP edge (SPEC §2.9): the peer hint of a `PUT`, and serving peer reads.

- `peer_grant(request)`: a `PUT` carrying ``X-Image-Cache-Source`` → the checked peer and the
  credential to present there: ``X-Image-Cache-Source-Token`` when the operator sent one (a
  per-pod peer-read token), else the caller's credential as received (kept in memory by the
  cache, never written). Only the
  operator's credential may send it: a Keystone user gets 403; a peer outside
  ``peer_networks`` (or none configured) gets 400.
- `admit_peer_read(request, found)`: a ``GET /v2/images/{id}/file`` carrying
  ``X-Image-Cache-Peer-Read`` is served only from this cache (404 on a miss: never read
  through to the upstream, never queued), pinned while it is sent, and at most
  ``peer_serve_limit`` at once (`PeerSlots`); beyond that 429 with ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from imagecache.agent.cache.facade import CachedFile
from imagecache.agent.cache.peer_fill import PeerGrant
from imagecache.agent.http.appkeys import METRICS, SETTINGS
from imagecache.agent.http.auth import presented_token
from imagecache.agent.http.errors import BadRequest, Forbidden, NotFound, PeerReadsBusy
from imagecache.agent.http.middlewares import PRINCIPAL
from imagecache.agent.peer_policy import SOURCE_HEADER, PeerRefused, check_peer
from imagecache.core.wire import SOURCE_TOKEN_HEADER

PEER_BUSY_RETRY_AFTER = 1  # seconds; the asking agent falls back to the upstream meanwhile


class PeerSlots:
    """Peer transfers running now, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> Callable[[], None] | None:
        """A slot (its release callback, idempotent), or None at the limit."""
        if self.in_use >= self.limit:
            return None
        self.in_use += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_use -= 1

        return release


PEER_SLOTS: web.AppKey[PeerSlots] = web.AppKey("peer_slots", PeerSlots)


def peer_grant(request: web.Request) -> PeerGrant | None:
    """The peer a `PUT` names (checked), with the credential it came with; None without one."""
    hint = request.headers.get(SOURCE_HEADER)
    if hint is None:
        return None
    if request.get(PRINCIPAL) == "keystone":
        raise Forbidden(f"{SOURCE_HEADER} is accepted only from the operator's credential")
    try:
        url = check_peer(hint, request.app[SETTINGS].peers)
    except PeerRefused as error:
        raise BadRequest(str(error)) from error
    return PeerGrant(url=url, credential=_credential(request))


def _credential(request: web.Request) -> dict[str, str]:
    """What the peer accepts: the token the operator sent for it (``X-Image-Cache-Source-Token``:
    with per-pod credentials, a token valid for peer reads at that peer only), else the
    caller's credential as it arrived (the shared token), else nothing."""
    given = request.headers.get(SOURCE_TOKEN_HEADER, "").strip()
    if given:
        return {"X-Auth-Token": given}
    if presented_token(request) is None:
        return {}
    if request.headers.get("X-Auth-Token"):
        return {"X-Auth-Token": request.headers["X-Auth-Token"].strip()}
    return {"Authorization": request.headers["Authorization"].strip()}


def admit_peer_read(request: web.Request, served: CachedFile | None) -> CachedFile:
    """A peer read of a pinned cached image, its release also freeing the transfer slot."""
    image_id = request.match_info["image_id"]
    if served is None:
        raise NotFound(f"Image {image_id} is not cached here (a peer read never reads through)")
    free = request.app[PEER_SLOTS].take()
    if free is None:
        served.release()
        request.app[METRICS].peer_busy.inc()
        raise PeerReadsBusy(
            f"{request.app[PEER_SLOTS].limit} peer transfers already run; try another source",
            retry_after=PEER_BUSY_RETRY_AFTER,
        )
    unpin = served.unpin

    def release() -> None:
        free()
        unpin()

    return dataclasses.replace(served, unpin=release)
