"""Upstreams for the integrity tests (issue 16: encodings, resume validators, id paths).

* `PrecompressedFiles`: a directory served by aiohttp's own `web.FileResponse` (``GET/HEAD
  /<name>``), which answers with the precompressed sibling ``<name>.gz`` (``Content-Encoding:
  gzip``) to a client that accepts gzip, as nginx's ``gzip_static`` does.
* `DeflatingGlance`, `DeflatingHttp`: a `FakeGlance` / `HttpFileServer` that deflates every
  answer (``Content-Encoding: deflate``) whatever the client asked for.
* `VersionedServer`: a plain HTTP upstream (``GET/HEAD /<id>``) whose images have versions,
  named by a strong ``ETag`` or a ``Last-Modified`` (or nothing), that honours ``Range`` and
  ``If-Range`` as RFC 9110 says (a stale ``If-Range`` gets the whole new version with 200).
  Per image (`Behaviour`): the first ``GET`` can stall after some bytes until
  ``release_stalls()`` and then go on, or be cut there (and the image replaced by a new version
  of the same size at that moment) — a test releases it once the agent holds those bytes, so
  the cut never races them; a ranged request can be answered 206 from the wrong start (said
  so in ``Content-Range``).
  ``server.seen`` lists every request (method, Range, If-Range, Accept-Encoding).
* `RecordingGlance`: a `FakeGlance` that also answers every other path (``/identity/v3/users``)
  with 200 JSON, recording it in ``requests``: a request that escapes ``/v2/images/{id}`` shows.

Every server records the ``Accept-Encoding`` it was sent (``seen`` / ``encodings``).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support.upstreams import FakeGlance, HttpFileServer, UpstreamImage, UpstreamServer

_RANGE_PREFIX = "bytes="
_DATES = [f"Sat, 05 Dec 2026 10:00:{second:02d} GMT" for second in range(60)]


class PrecompressedFiles(UpstreamServer):
    """``GET/HEAD /<name>`` answered by `web.FileResponse` over `directory`."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.directory = directory
        self.encodings: list[str | None] = []

    def _is_bytes_path(self, path: str, image_id: str) -> bool:
        return path == f"/{image_id}"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        self.encodings.append(request.headers.get("Accept-Encoding"))
        path = self.directory / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)


def _deflated(response: web.Response) -> web.Response:
    response.enable_compression(web.ContentCoding.deflate)  # forced, whatever was accepted
    return response


async def _deflated_bytes(request: web.Request, image: UpstreamImage) -> web.StreamResponse:
    """The whole image, deflated (HEAD: its headers)."""
    return _deflated(web.Response(body=image.data, content_type="application/octet-stream"))


class DeflatingGlance(FakeGlance):
    """A fake Glance that deflates every answer, metadata and bytes alike."""

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        response = await super()._metadata(request)
        assert isinstance(response, web.Response)
        return _deflated(response)

    async def _serve_bytes(self, request: web.Request, image: UpstreamImage) -> web.StreamResponse:
        return await _deflated_bytes(request, image)


class DeflatingHttp(HttpFileServer):
    """A plain HTTP upstream that deflates every answer."""

    async def _serve_bytes(self, request: web.Request, image: UpstreamImage) -> web.StreamResponse:
        return await _deflated_bytes(request, image)


class RecordingGlance(FakeGlance):
    """A fake Glance whose host also answers any other path with JSON, recorded."""

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_get("/{tail:.*}", self._elsewhere)
        return app

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"users": [{"name": "admin", "password_expires_at": None}]})


@dataclass
class Behaviour:
    """How `VersionedServer` treats one image (see the module docstring)."""

    validators: str = "etag"  # "etag", "last-modified" or "none"
    stall_first_after: int | None = None
    cut: bool = False  # when released, the first GET is cut instead of going on
    replace_with: bytes | None = None  # the new version, in place when the first GET is cut
    wrong_range_start: bool = False


@dataclass
class Request:
    """One request `VersionedServer` received."""

    method: str
    range: str | None
    if_range: str | None
    accept_encoding: str | None


@dataclass
class _Image:
    data: bytes
    version: int = 1
    behaviour: Behaviour = field(default_factory=Behaviour)
    gets: int = 0


class VersionedServer(UpstreamServer):
    """``GET/HEAD /<id>`` with versions, validators, ``Range`` and ``If-Range``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.versioned: dict[str, _Image] = {}
        self.seen: list[Request] = []

    def put(self, image_id: str, data: bytes, behaviour: Behaviour | None = None) -> None:
        self.versioned[image_id] = _Image(data=data, behaviour=behaviour or Behaviour())

    def replace(self, image_id: str, data: bytes) -> None:
        """A new version of the image (new validators)."""
        image = self.versioned[image_id]
        image.data, image.version = data, image.version + 1

    def _is_bytes_path(self, path: str, image_id: str) -> bool:
        return path == f"/{image_id}"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{image_id}", self._handle)
        return app

    @staticmethod
    def _validators(image: _Image) -> dict[str, str]:
        kind = image.behaviour.validators
        if kind == "etag":
            return {"ETag": f'"v{image.version}"', "Last-Modified": _DATES[image.version]}
        if kind == "last-modified":
            return {"ETag": f'W/"v{image.version}"', "Last-Modified": _DATES[image.version]}
        return {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        self.seen.append(
            Request(
                request.method,
                headers.get("Range"),
                headers.get("If-Range"),
                headers.get("Accept-Encoding"),
            )
        )
        image = self.versioned.get(request.match_info["image_id"])
        if image is None:
            raise web.HTTPNotFound()
        validators = self._validators(image)
        data, start, status = image.data, 0, 200
        answer = {"Accept-Ranges": "bytes", **validators}
        wanted = headers.get("Range", "")
        if_range = headers.get("If-Range")
        current = {v for k, v in validators.items() if not v.startswith("W/")}
        if wanted.startswith(_RANGE_PREFIX) and (if_range is None or if_range in current):
            start, status = int(wanted.removeprefix(_RANGE_PREFIX).rstrip("-")), 206
            said = 0 if image.behaviour.wrong_range_start else start
            answer["Content-Range"] = f"bytes {said}-{len(data) - 1}/{len(data)}"
            data = data[said:]
        response = web.StreamResponse(status=status, headers=answer)
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        image.gets += 1
        behaviour = image.behaviour
        first = image.gets == 1
        try:
            if first and behaviour.stall_first_after is not None:
                await response.write(data[: behaviour.stall_first_after])
                assert self._release is not None
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), 30)
                if behaviour.cut:
                    if behaviour.replace_with is not None:
                        self.replace(request.match_info["image_id"], behaviour.replace_with)
                    assert request.transport is not None
                    request.transport.close()
                    return response
                data = data[behaviour.stall_first_after :]
            await response.write(data)
            await response.write_eof()
        except ConnectionError:  # the agent went away
            pass
        return response


__all__ = [
    "Behaviour",
    "DeflatingGlance",
    "DeflatingHttp",
    "PrecompressedFiles",
    "RecordingGlance",
    "Request",
    "VersionedServer",
]
