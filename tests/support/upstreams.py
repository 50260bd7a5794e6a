"""Real upstream servers for tests: an HTTP file server and a fake Glance image API.

Both are in-process aiohttp apps listening on a loopback address, serving images kept in memory
(tests use small images). Each can be started on the test's own event loop (``async with``) or in
a background thread with its own loop (``with server.running_in_thread():``) when the test
drives real agent processes with blocking calls.

API, shared by `HttpFileServer` and `FakeGlance` (both subclass `UpstreamServer`):

* ``server.add(image_id, data, **fields) -> UpstreamImage`` stores an image; ``fields`` override
  ``status`` ("active"), ``checksum`` (md5 hex), ``os_hash_algo`` ("sha512"), ``os_hash_value``.
  Pass ``checksum=None`` etc. to leave a field out.
* ``server.faults[image_id] = Faults(...)`` (or ``server.default_faults``) makes responses fail:
    - ``fail_times=N`` / ``fail_status=503``: the next N byte requests answer 5xx;
    - ``stall_after=B`` / ``stall_seconds=S``: after B body bytes, stop sending for S seconds
      (or until ``server.release_stalls()``), then carry on;
    - ``drop_after=B``: send B body bytes, then drop the connection (once per ``drop_times``);
    - ``short_by=K``: GET declares and sends K bytes fewer than the image size (a size
      mismatch; HEAD and the Glance metadata still give the true size);
    - ``corrupt=True``: flip one byte in the middle of the body (a checksum mismatch);
    - ``honour_range=False``: ignore ``Range`` and always answer 200 with the whole body;
    - ``metadata_status=N``: the metadata request (HEAD / ``/v2/images/{id}``) answers N.
* ``server.requests`` is a list of `Seen` (method, path, range, token) in arrival order;
  ``server.count(method, image_id)`` counts byte-serving requests (GET of the bytes).
* ``server.url`` is the base URL; ``server.upstream`` the agent ``--upstream`` value for it.

`HttpFileServer` serves ``GET/HEAD /<id>`` (``Content-Length``, ``Content-MD5`` as base64 md5,
``Accept-Ranges: bytes``). `FakeGlance` serves ``GET /v2/images/{id}`` (Glance's JSON fields) and
``GET/HEAD /v2/images/{id}/file``; with ``token=...`` it answers 401 to any other
``X-Auth-Token``. ``write_file_image(dir, id, data, sidecar=True)`` lays an image out for the
agent's file upstream (``<dir>/<id>`` plus a ``<id>.json`` Glance sidecar).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Faults:
    """Knobs that make the upstream misbehave for one image (see the module docstring)."""

    fail_times: int = 0
    fail_status: int = 503
    stall_after: int | None = None
    stall_seconds: float = 3600.0
    drop_after: int | None = None
    drop_times: int = 1
    short_by: int = 0
    corrupt: bool = False
    honour_range: bool = True
    metadata_status: int | None = None


@dataclass
class UpstreamImage:
    """One image held by a fake upstream, with the Glance fields it reports."""

    image_id: str
    data: bytes
    status: str = "active"
    checksum: str | None = None
    os_hash_algo: str | None = "sha512"
    os_hash_value: str | None = None

    def glance_fields(self) -> dict[str, Any]:
        """The image as Glance's `GET /v2/images/{id}` shows it (only fields that are set)."""
        doc: dict[str, Any] = {
            "id": self.image_id,
            "status": self.status,
            "size": len(self.data),
            "disk_format": "raw",
            "container_format": "bare",
            "name": self.image_id,
        }
        for key in ("checksum", "os_hash_algo", "os_hash_value"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        return doc


@dataclass(frozen=True)
class Seen:
    """One request the upstream received."""

    method: str
    path: str
    range: str | None
    token: str | None


def make_image(image_id: str, data: bytes, **fields: Any) -> UpstreamImage:
    """An `UpstreamImage` whose checksums are computed from `data` unless overridden."""
    image = UpstreamImage(
        image_id=image_id,
        data=data,
        checksum=hashlib.md5(data).hexdigest(),
        os_hash_value=hashlib.sha512(data).hexdigest(),
    )
    for key, value in fields.items():
        if not hasattr(image, key):
            raise TypeError(f"unknown image field {key!r}")
        setattr(image, key, value)
    return image


def write_file_image(
    directory: Path, image_id: str, data: bytes, *, sidecar: bool = True, **fields: Any
) -> UpstreamImage:
    """Lay out an image for the agent's `file://` upstream; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    image = make_image(image_id, data, **fields)
    (directory / image_id).write_bytes(data)
    if sidecar:
        doc = image.glance_fields()
        for key in ("id", "size", "disk_format", "container_format", "name"):
            doc.pop(key, None)
        (directory / f"{image_id}.json").write_text(json.dumps(doc))
    return image


class UpstreamServer:
    """Base of the fake upstreams: image store, fault knobs, request log, start/stop."""

    scheme_prefix = ""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.images: dict[str, UpstreamImage] = {}
        self.faults: dict[str, Faults] = {}
        self.default_faults = Faults()
        self.requests: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drops: dict[str, int] = {}

    # --- images and knobs ------------------------------------------------------------------
    def add(self, image_id: str, data: bytes, **fields: Any) -> UpstreamImage:
        """Store an image (checksums computed unless overridden; pass None to omit a field)."""
        image = make_image(image_id, data, **fields)
        self.images[image_id] = image
        return image

    def faults_for(self, image_id: str) -> Faults:
        return self.faults.get(image_id, self.default_faults)

    def count(self, method: str, image_id: str) -> int:
        """How many byte-serving requests with `method` arrived for `image_id`."""
        return sum(
            1 for s in self.requests if s.method == method and self._is_bytes_path(s.path, image_id)
        )

    def _is_bytes_path(self, path: str, image_id: str) -> bool:
        raise NotImplementedError

    def release_stalls(self) -> None:
        """Let every stalled response carry on now (thread-safe)."""
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upstream(self) -> str:
        return f"{self.scheme_prefix}{self.url}/"

    # --- lifecycle -------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> UpstreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextmanager
    def running_in_thread(self, timeout: float = 10.0) -> Iterator[UpstreamServer]:
        """Serve from a background thread with its own event loop (for blocking tests)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=loop.run_forever, name="upstream", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
            ready.set()
            yield self
        finally:
            if ready.is_set():
                asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()

    # --- serving bytes ---------------------------------------------------------------------
    def _record(self, request: web.Request) -> None:
        self.requests.append(
            Seen(
                method=request.method,
                path=request.path,
                range=request.headers.get("Range"),
                token=request.headers.get("X-Auth-Token"),
            )
        )

    async def _serve_bytes(self, request: web.Request, image: UpstreamImage) -> web.StreamResponse:
        """Answer GET/HEAD for an image's bytes, honouring Range and the fault knobs."""
        faults = self.faults_for(image.image_id)
        if request.method == "GET" and faults.fail_times > 0:
            faults.fail_times -= 1
            return web.Response(status=faults.fail_status, text="injected failure")
        data = image.data
        if faults.short_by and request.method == "GET":
            data = data[: max(0, len(data) - faults.short_by)]
        if faults.corrupt and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        start, status = 0, 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        match = _RANGE.match(request.headers.get("Range", ""))
        if match and faults.honour_range:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            end = min(end, len(data))
            if start >= len(data) and len(data) > 0:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{max(start, end - 1)}/{len(data)}"
            data = data[start:end]
        md5 = image.checksum
        if md5 is not None and status == 200:  # the true checksum, whatever the body holds
            headers["Content-MD5"] = base64.b64encode(bytes.fromhex(md5)).decode()
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            await self._write_body(request, response, image.image_id, data, start, faults)
            await response.write_eof()
        except ConnectionResetError:  # the client went away (e.g. an agent killed with -9)
            pass
        return response

    async def _write_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        image_id: str,
        data: bytes,
        offset: int,
        faults: Faults,
    ) -> None:
        chunk = 64 * 1024
        position = 0
        stall_after = faults.stall_after
        while position < len(data):
            absolute = offset + position
            drops_done = self._drops.get(image_id, 0)
            drop_pending = faults.drop_after is not None and drops_done < faults.drop_times
            if drop_pending and faults.drop_after is not None and absolute >= faults.drop_after:
                self._drops[image_id] = drops_done + 1
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # the connection is gone; stop this handler
            if stall_after is not None and absolute >= stall_after:
                assert self._release is not None
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), faults.stall_seconds)
                stall_after = None
                continue
            limit = len(data)
            if stall_after is not None:
                limit = min(limit, stall_after - offset)
            if drop_pending and faults.drop_after is not None:
                limit = min(limit, faults.drop_after - offset)
            piece = data[position : min(limit, position + chunk)]
            await response.write(piece)
            position += len(piece)


class HttpFileServer(UpstreamServer):
    """A plain HTTP server: ``GET/HEAD /<id>`` with Range; the agent's `http://` upstream."""

    def _is_bytes_path(self, path: str, image_id: str) -> bool:
        return path == f"/{image_id}"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{image_id}", self._handle)  # also answers HEAD
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        image = self.images.get(request.match_info["image_id"])
        if image is None:
            raise web.HTTPNotFound()
        status = self.faults_for(image.image_id).metadata_status
        if request.method == "HEAD" and status is not None:
            return web.Response(status=status)
        return await self._serve_bytes(request, image)


class FakeGlance(UpstreamServer):
    """A fake Glance image API: ``/v2/images/{id}`` metadata and ``/v2/images/{id}/file``."""

    scheme_prefix = "glance+"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        super().__init__(host, port)
        self.token = token

    @property
    def upstream(self) -> str:
        return f"glance+{self.url}"

    def _is_bytes_path(self, path: str, image_id: str) -> bool:
        return path == f"/v2/images/{image_id}/file"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/images/{image_id}", self._metadata)
        app.router.add_get("/v2/images/{image_id}/file", self._file)
        return app

    def _check(self, request: web.Request) -> UpstreamImage:
        self._record(request)
        if self.token is not None and request.headers.get("X-Auth-Token") != self.token:
            raise web.HTTPUnauthorized(
                text=json.dumps({"code": 401, "title": "Unauthorized", "message": "bad token"}),
                content_type="application/json",
            )
        image = self.images.get(request.match_info["image_id"])
        if image is None:
            raise web.HTTPNotFound(
                text=json.dumps({"code": 404, "title": "Not Found", "message": "no image"}),
                content_type="application/json",
            )
        return image

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        image = self._check(request)
        status = self.faults_for(image.image_id).metadata_status
        if status is not None:
            return web.Response(status=status)
        return web.json_response(image.glance_fields())

    async def _file(self, request: web.Request) -> web.StreamResponse:
        image = self._check(request)
        if image.status != "active":
            raise web.HTTPNoContent()  # what Glance answers for an image without data
        return await self._serve_bytes(request, image)


@asynccontextmanager
async def serving(server: UpstreamServer) -> AsyncIterator[UpstreamServer]:
    """`async with serving(HttpFileServer()) as up:` on the current event loop."""
    await server.start()
    try:
        yield server
    finally:
        await server.close()


__all__ = [
    "FakeGlance",
    "Faults",
    "HttpFileServer",
    "Seen",
    "UpstreamImage",
    "UpstreamServer",
    "make_image",
    "serving",
    "write_file_image",
]
