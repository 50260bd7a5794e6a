"""A hostile upstream for the agent's hardening tests, and a second server it redirects to.

`HostileGlance` is a `FakeGlance` (tests/support/upstreams.py) whose answers break the bounds an
agent must hold, per image (``server.hostility[image_id] = Hostility(...)``):

* ``redirect_metadata`` / ``redirect_file``: ``GET /v2/images/{id}`` or ``.../file`` answers
  ``302 Location: <url>`` (the `Elsewhere` server: another loopback address and port);
* ``fields``: Glance fields replaced in the metadata document (``None`` drops a field), e.g.
  ``{"os_hash_algo": "shake_128"}`` or ``{"size": None}``;
* ``padding``: the metadata document carries a string field of this many bytes, sent chunked
  (no ``Content-Length``), so only a reader that stops early avoids reading all of it;
* ``extra``: the file body carries this many bytes more than the image (whose declared size
  stays the image's), sent chunked;
* ``chunked_short_by``: the file body is sent chunked and ends this many bytes early.

``server.sent[image_id]`` counts the bytes actually written for that image's bodies (metadata and
file), so a test can tell "stopped at the first extra byte" from "read until max_size".

`Elsewhere` answers every GET with 200 — a Glance image document for ``/v2/images/{id}``, its own
bytes for anything else — and records the ``X-Auth-Token`` of each request in ``tokens``
(``None`` when none was sent): the token must never arrive there.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.upstreams import FakeGlance, UpstreamServer

BLOCK = 64 * 1024


@dataclass
class Hostility:
    """How `HostileGlance` misbehaves for one image (see the module docstring)."""

    redirect_metadata: str | None = None
    redirect_file: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    padding: int = 0
    extra: int = 0
    chunked_short_by: int = 0


class HostileGlance(FakeGlance):
    """A Glance image API that redirects, lies about sizes and sends oversized documents."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        super().__init__(host, port, token=token)
        self.hostility: dict[str, Hostility] = {}
        self.sent: defaultdict[str, int] = defaultdict(int)

    def metadata_requests(self, image_id: str) -> int:
        """How many ``GET /v2/images/{id}`` arrived."""
        return sum(1 for s in self.requests if s.path == f"/v2/images/{image_id}")

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        hostile = self.hostility.get(request.match_info["image_id"])
        if hostile is None:
            return await super()._metadata(request)
        image = self._check(request)
        if hostile.redirect_metadata is not None:
            raise web.HTTPFound(hostile.redirect_metadata)
        doc = image.glance_fields()
        for key, value in hostile.fields.items():
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        if not hostile.padding:
            return web.json_response(doc)
        head = json.dumps(doc)[:-1].encode() + b', "padding": "'
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await self._send(request, response, image.image_id, head)
        left = hostile.padding
        while left > 0:
            piece = b"x" * min(BLOCK, left)
            if not await self._send(request, response, image.image_id, piece):
                return response
            left -= len(piece)
        await self._send(request, response, image.image_id, b'"}')
        await response.write_eof()
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        hostile = self.hostility.get(request.match_info["image_id"])
        if hostile is None or not (
            hostile.redirect_file or hostile.extra or hostile.chunked_short_by
        ):
            return await super()._file(request)
        image = self._check(request)
        if hostile.redirect_file is not None:
            raise web.HTTPFound(hostile.redirect_file)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        body = image.data[: len(image.data) - hostile.chunked_short_by]
        for start in range(0, len(body), BLOCK):
            if not await self._send(request, response, image.image_id, body[start : start + BLOCK]):
                return response
        left = hostile.extra
        while left > 0:
            piece = b"\0" * min(BLOCK, left)
            if not await self._send(request, response, image.image_id, piece):
                return response
            left -= len(piece)
        await response.write_eof()
        return response

    async def _send(
        self, request: web.Request, response: web.StreamResponse, image_id: str, data: bytes
    ) -> bool:
        """Write `data`; False once the client has gone away."""
        if request.transport is None or request.transport.is_closing():
            return False
        try:
            await response.write(data)
        except (ConnectionResetError, ConnectionError):
            return False
        self.sent[image_id] += len(data)
        return True


class Elsewhere(UpstreamServer):
    """Another host: answers every GET with bytes and records the tokens it was sent."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0) -> None:
        super().__init__(host, port)
        self.tokens: list[str | None] = []
        self.body = b"bytes from elsewhere" * 1000

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self._record(request)
        self.tokens.append(request.headers.get("X-Auth-Token"))
        parts = request.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v2", "images"]:
            doc = {"id": parts[2], "status": "active", "size": len(self.body)}
            return web.json_response(doc)
        return web.Response(body=self.body, content_type="application/octet-stream")


__all__ = ["BLOCK", "Elsewhere", "HostileGlance", "Hostility"]
