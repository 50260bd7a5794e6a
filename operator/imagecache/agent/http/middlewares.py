"""The two middlewares: Glance-shaped JSON errors (one place), and token auth."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from imagecache.agent.cache.db import DatabaseError, DatabaseFull
from imagecache.agent.http.auth import AcceptedTokens, InboundAuth, presented_token
from imagecache.agent.http.errors import ApiError
from imagecache.agent.keystone import KeystoneError
from imagecache.agent.token_review import TokenReviewError

log = logging.getLogger("imagecache.agent.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/versions", "/"})


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


def is_glance_client(request: web.BaseRequest) -> bool:
    """A stock python-glanceclient that did not ask for JSON explicitly.

    It needs two Glance quirks: errors in plain text (it crashes on flat JSON errors) and a
    cache listing with only Glance's two keys (it prints every other key as queued ids).
    """
    agent = request.headers.get("User-Agent", "")
    return "glanceclient" in agent and "json" not in request.headers.get("Accept", "")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors and aiohttp's HTTP exceptions to JSON; never leak a stack trace."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(
            error.status, error.title, str(error), headers=error.headers or None, request=request
        )
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
    tokens: AcceptedTokens | None, keystone: InboundAuth | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Require a valid token on everything but `OPEN_PATHS`.

    Token-file mode (`keystone` None): a token of the file; no-op without a file. Keystone
    mode: a token of the file (the operator's) or a Keystone token holding one of the roles:
    401 when Keystone does not know it (or it expired), 403 when it lacks the roles, 503 when
    Keystone cannot be asked. Kubernetes mode (`keystone` a `TokenReviews`): a token of the file
    or one a TokenReview accepts for this pod (401 otherwise, 503 when the API cannot be asked).
    """

    def unauthorized(request: web.Request) -> web.Response:
        return error_response(
            401,
            "Unauthorized",
            "This server could not verify that you are authorized "
            "to access the document you requested.",
            {"WWW-Authenticate": 'Bearer realm="imagecache"'},
            request,
        )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (tokens is None and keystone is None) or request.path in OPEN_PATHS:
            return await handler(request)
        presented = presented_token(request)
        if tokens is not None and await tokens.accepts(presented):
            return await handler(request)
        if keystone is None or not presented:
            return unauthorized(request)
        try:
            outcome = await keystone.check(presented)
        except (KeystoneError, TokenReviewError) as error:
            log.warning("cannot validate a token: %s", error)
            judge = "Keystone" if isinstance(error, KeystoneError) else "The Kubernetes API"
            return error_response(
                503,
                "Service Unavailable",
                f"{judge} cannot validate tokens right now.",
                request=request,
            )
        if outcome == "invalid":
            return unauthorized(request)
        if outcome == "forbidden":
            return error_response(
                403,
                "Forbidden",
                "You are not authorized to complete this action.",
                request=request,
            )
        return await handler(request)

    return middleware
