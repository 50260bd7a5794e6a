"""The two middlewares: Glance-shaped JSON errors (one place), and token auth.

Auth in keystone mode never makes a request wait on Keystone when it needs no validation: the
open paths and the operator's token-file tokens are answered first, then a cached verdict (or
a token no Keystone would issue: 401 at once). Only then is Keystone asked, bounded per client
address (`ClientSlots`: a client with `MAX_VALIDATIONS_PER_CLIENT` validations in flight gets
429 for more, other clients are not affected) and in time (``keystone_timeout``: 503).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from imagecache.agent.cache.db import DatabaseError, DatabaseFull
from imagecache.agent.cache.errors import CacheError
from imagecache.agent.http.auth import AcceptedTokens, InboundAuth, presented_token
from imagecache.agent.http.errors import ApiError, to_api_error
from imagecache.agent.keystone import Keystone, KeystoneError, Outcome
from imagecache.agent.peer_policy import PEER_READ_HEADER
from imagecache.agent.token_review import TokenReviewError
from imagecache.agent.upstream.index import InvalidQuery
from imagecache.agent.upstream.port import UpstreamError

log = logging.getLogger("imagecache.agent.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

Principal = Literal["anonymous", "token", "keystone", "kubernetes", "peer"]
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
"""Who the request was authenticated as: no auth configured, a token of `token_file` (the
operator's credential), a Keystone user, or a token a TokenReview accepted for this pod as the
operator's service account (the operator's per-pod credential), or a peer-read token of this pod
(another agent reading a cached image: accepted on that route only). Views that trust only the
operator read it."""

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/versions", "/"})
MAX_VALIDATIONS_PER_CLIENT = 8
"""Token validations one client address may have waiting on Keystone at once."""
SHED_RETRY_AFTER = 1  # seconds


class ClientSlots:
    """In-flight token validations per client address, each address bounded by `limit`."""

    def __init__(self, limit: int = MAX_VALIDATIONS_PER_CLIENT) -> None:
        self.limit = limit
        self._in_flight: Counter[str] = Counter()

    def take(self, client: str) -> bool:
        if self._in_flight[client] >= self.limit:
            return False
        self._in_flight[client] += 1
        return True

    def give_back(self, client: str) -> None:
        self._in_flight[client] -= 1
        if self._in_flight[client] <= 0:
            del self._in_flight[client]


def error_response(
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
    request: web.BaseRequest | None = None,
) -> web.Response:
    """Glance's error shape: ``{"code": "404 Not Found", "title": ..., "message": ...}``.

    python-glanceclient cannot parse that flat JSON (it expects every top-level value to be an
    object) and never asks for JSON: Glance (webob) answers it in plain text, and so do we.
    """
    if request is not None and is_glance_client(request):
        text = f"{status} {title}\n\n{message}\n"
        return web.Response(status=status, text=text, content_type="text/plain", headers=headers)
    body = json.dumps({"code": f"{status} {title}", "title": title, "message": message})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def api_error_response(error: ApiError, request: web.BaseRequest) -> web.Response:
    return error_response(
        error.status, error.title, str(error), headers=error.headers or None, request=request
    )


_PEER_READ_PATH = re.compile(r"^/v2/images/[^/]+/file$")


def is_peer_read(request: web.BaseRequest) -> bool:
    """``GET``/``HEAD /v2/images/{id}/file`` marked as another agent's read (served from the
    cache only, never read through)."""
    return (
        request.method in ("GET", "HEAD")
        and PEER_READ_HEADER in request.headers
        and bool(_PEER_READ_PATH.match(request.path))
    )


def is_glance_client(request: web.BaseRequest) -> bool:
    """A stock python-glanceclient that did not ask for JSON explicitly.

    It needs two Glance quirks: errors in plain text (it crashes on flat JSON errors) and a
    cache listing with only Glance's two keys (it prints every other key as queued ids).
    """
    agent = request.headers.get("User-Agent", "")
    return "glanceclient" in agent and "json" not in request.headers.get("Accept", "")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors and aiohttp's HTTP exceptions to JSON; never leak a stack trace.

    A client that goes away mid-answer is one INFO line (nothing is left to answer to), not
    an ERROR with a traceback.
    """
    try:
        return await handler(request)
    except ApiError as error:
        return api_error_response(error, request)
    except (CacheError, UpstreamError, InvalidQuery) as error:
        return api_error_response(to_api_error(error, request.match_info.get("image_id")), request)
    except ConnectionError as error:
        log.info(
            "client went away during %s %s: %s",
            request.method,
            request.path,
            error,
            extra={"event": "client_gone"},
        )
        # Nothing can reach the client; aiohttp drops this answer quietly (raising would
        # log an ERROR traceback for a client that merely hung up).
        return web.Response(status=400)
    except DatabaseFull:
        return error_response(
            507,
            "Insufficient Storage",
            "The cache disk is full: the request could not be recorded.",
            request=request,
        )
    except DatabaseError:
        return error_response(
            503,
            "Service Unavailable",
            "The cache database cannot be written right now.",
            request=request,
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow",)}
        message = {
            404: "The resource could not be found.",
            405: f"The method {request.method} is not allowed for this resource.",
        }.get(error.status, error.reason)
        return error_response(error.status, error.reason, message, headers, request)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            500, "Internal Server Error", "The server has an internal error.", request=request
        )


def auth_middleware(
    tokens: AcceptedTokens | None,
    keystone: InboundAuth | None = None,
    peer_reads: InboundAuth | None = None,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Require a valid token on everything but `OPEN_PATHS`.

    Token-file mode (`keystone` None): a token of the file; no-op without a file. Keystone
    mode: a token of the file (the operator's) or a Keystone token holding one of the roles:
    401 when Keystone does not know it, refuses it as malformed, it expired, or it is no
    plausible token (never sent to Keystone); 403 when it lacks the roles; 429 when this
    client already waits for `MAX_VALIDATIONS_PER_CLIENT` validations; 503 when Keystone
    cannot be asked (or does not answer within ``keystone_timeout``).
    Kubernetes mode (`keystone` a `TokenReviews`): a token of the file or one a TokenReview
    accepts for this pod (401 otherwise, 503 when the API cannot be asked); with `peer_reads`
    (a `TokenReviews` for this pod's peer audience), a token it accepts, on a peer read only
    (`is_peer_read`: another agent reading a cached image; fleet fill).
    """
    slots = ClientSlots()

    def unauthorized(request: web.Request) -> web.Response:
        return error_response(
            401,
            "Unauthorized",
            "This server could not verify that you are authorized "
            "to access the document you requested.",
            {"WWW-Authenticate": 'Bearer realm="imagecache"'},
            request,
        )

    async def judged(
        judge: InboundAuth, presented: str, request: web.Request
    ) -> Outcome | web.Response:
        """`judge`'s verdict on `presented`, or the answer when it cannot be had."""
        outcome = judge.known(presented)
        if outcome is not None:
            return outcome
        client = request.remote or ""
        if not slots.take(client):
            return error_response(
                429,
                "Too Many Requests",
                "Too many of your tokens are being validated at once; retry shortly.",
                {"Retry-After": str(SHED_RETRY_AFTER)},
                request,
            )
        try:
            return await judge.check(presented)
        except (KeystoneError, TokenReviewError) as error:
            log.warning("cannot validate a token: %s", error)
            name = "Keystone" if isinstance(error, KeystoneError) else "The Kubernetes API"
            return error_response(
                503,
                "Service Unavailable",
                f"{name} cannot validate tokens right now.",
                request=request,
            )
        finally:
            slots.give_back(client)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (tokens is None and keystone is None) or request.path in OPEN_PATHS:
            request[PRINCIPAL] = "anonymous"
            return await handler(request)
        presented = presented_token(request)
        if tokens is not None and await tokens.accepts(presented):
            request[PRINCIPAL] = "token"
            return await handler(request)
        if keystone is None or not presented:
            return unauthorized(request)
        outcome = await judged(keystone, presented, request)
        if isinstance(outcome, web.Response):
            return outcome
        if outcome == "invalid" and peer_reads is not None and is_peer_read(request):
            outcome = await judged(peer_reads, presented, request)
            if isinstance(outcome, web.Response):
                return outcome
            if outcome == "allowed":
                request[PRINCIPAL] = "peer"
                return await handler(request)
        if outcome == "invalid":
            return unauthorized(request)
        if outcome == "forbidden":
            return error_response(
                403,
                "Forbidden",
                "You are not authorized to complete this action.",
                request=request,
            )
        request[PRINCIPAL] = "keystone" if isinstance(keystone, Keystone) else "kubernetes"
        return await handler(request)

    return middleware
