"""A throttled, byte-counting HTTP upstream for the agent fault tests.

Builds on the shared `tests.support.upstreams.HttpFileServer` (images, fault knobs, request log)
and adds the two things crash tests need:

* ``throttle[image_id] = bytes_per_second``: the body of that image trickles out at this rate
  (in small chunks), so a `kill -9` of the agent lands in the middle of the body;
* ``served[image_id]``: how many body bytes were actually handed to the network for that image,
  across every request, so a test can tell a resumed download from one that started over.

Everything else (Range, faults, ``requests``) is the shared server's behaviour.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiohttp import web

from tests.support.upstreams import Faults, HttpFileServer

CHUNK = 16 * 1024


class ThrottledServer(HttpFileServer):
    """`HttpFileServer` whose throttled images trickle out and whose body bytes are counted."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.throttle: dict[str, float] = {}
        self.served: defaultdict[str, int] = defaultdict(int)

    async def _write_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        image_id: str,
        data: bytes,
        offset: int,
        faults: Faults,
    ) -> None:
        rate = self.throttle.get(image_id)
        if rate is None:
            counting = _CountingResponse(response, self, image_id)
            await super()._write_body(request, counting, image_id, data, offset, faults)  # type: ignore[arg-type]
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        for position in range(0, len(data), CHUNK):
            piece = data[position : position + CHUNK]
            try:
                await response.write(piece)
            except ConnectionResetError:
                return  # the agent went away (killed, or it cancelled the download)
            sent += len(piece)
            self.served[image_id] += len(piece)
            # Pace against the wall clock: the body never runs ahead of `rate` bytes/second.
            ahead = sent / rate - (loop.time() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


class _CountingResponse:
    """Wraps a `StreamResponse` so that every body write is added to `served`."""

    def __init__(self, response: web.StreamResponse, server: ThrottledServer, image_id: str):
        self._response = response
        self._server = server
        self._image_id = image_id

    async def write(self, data: bytes) -> None:
        await self._response.write(data)
        self._server.served[self._image_id] += len(data)
