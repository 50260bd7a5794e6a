"""The file upstream: image ``X`` is ``<dir>/X``, with an optional Glance sidecar ``X.json``.

The sidecar is read by `read_sidecar` (up to `METADATA_LIMIT` bytes, parsed by
`documents.load_document`'s one rule) and its fields pass `port.image_meta`'s bounds, as an HTTP
upstream's metadata does. An open image names its version by the file's size, mtime and inode
(`stream.validator`): a resume whose partial was read from another version starts over.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO

from imagecache.agent.upstream.batching import ThreadBatch
from imagecache.agent.upstream.documents import load_document
from imagecache.agent.upstream.port import (
    CHUNK_SIZE,
    METADATA_LIMIT,
    BadUpstreamAnswer,
    ByteStream,
    ChunkStream,
    ImageMeta,
    ImageNotFound,
    TransientUpstreamError,
    image_meta,
)
from imagecache.core.ids import is_valid_image_id


class FileUpstream:
    """Images are files ``<dir>/<id>``, with an optional Glance sidecar ``<dir>/<id>.json``."""

    def __init__(self, directory: Path, *, chunk_size: int = CHUNK_SIZE) -> None:
        self.directory = directory
        self.chunk_size = chunk_size
        self._metadata = ThreadBatch(self._read_metadata)  # a PUT burst: one hop, many stats

    def _path(self, image_id: str) -> Path:
        if not is_valid_image_id(image_id):
            raise ImageNotFound(image_id)
        return self.directory / image_id

    async def metadata(self, image_id: str) -> ImageMeta:
        path = self._path(image_id)
        return await self._metadata.call(path)

    @staticmethod
    def _read_metadata(path: Path) -> ImageMeta:
        try:
            stat = path.stat()
        except FileNotFoundError as error:
            raise ImageNotFound(path.name) from error
        except OSError as error:
            raise TransientUpstreamError(
                f"cannot stat {path.name}: {error}", reason="connection"
            ) from error
        if not S_ISREG(stat.st_mode):
            raise ImageNotFound(path.name)
        fields = read_sidecar(path)
        return image_meta(
            size=stat.st_size,
            status=fields.get("status", "active"),
            checksum=fields.get("checksum"),
            os_hash_algo=fields.get("os_hash_algo"),
            os_hash_value=fields.get("os_hash_value"),
        )

    @asynccontextmanager
    async def open(
        self, image_id: str, offset: int, *, validator: str | None = None
    ) -> AsyncIterator[ByteStream]:
        path = self._path(image_id)
        try:
            handle: BinaryIO = await asyncio.to_thread(path.open, "rb", buffering=0)
        except FileNotFoundError as error:
            raise ImageNotFound(image_id) from error
        except OSError as error:
            raise TransientUpstreamError(
                f"cannot open {image_id}: {error}", reason="connection"
            ) from error
        try:
            version = file_version(await asyncio.to_thread(os.fstat, handle.fileno()))
            if validator is not None and validator != version:
                offset = 0  # the file changed since the partial was read from it
            await asyncio.to_thread(handle.seek, offset)

            async def source() -> AsyncIterator[bytes]:
                while True:
                    try:
                        chunk = await asyncio.to_thread(handle.read, self.chunk_size)
                    except OSError as error:
                        raise TransientUpstreamError(
                            f"read failed: {error}", reason="connection"
                        ) from error
                    if not chunk:
                        return
                    yield chunk

            yield ChunkStream(offset=offset, source=source, validator=version)
        finally:
            await asyncio.to_thread(handle.close)

    async def close(self) -> None:
        return None


def file_version(info: os.stat_result) -> str:
    """A file's version for resuming: its size, mtime (ns) and inode."""
    return f"file:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


def read_sidecar(path: Path) -> dict[str, Any]:
    """The Glance fields of image file `path` (its ``<name>.json``), {} when it has none.

    Blocking. A sidecar that cannot be read, is too large, is not JSON within
    `load_document`'s bounds or not an object is a `BadUpstreamAnswer`.
    """
    sidecar = path.with_name(path.name + ".json")
    try:
        with sidecar.open("rb") as handle:
            text = handle.read(METADATA_LIMIT + 1)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise BadUpstreamAnswer(
            f"unreadable sidecar {sidecar.name}: {error}", reason="bad_metadata"
        ) from error
    fields = load_document(text, source=f"sidecar {sidecar.name}")
    if not isinstance(fields, dict):
        raise BadUpstreamAnswer(
            f"sidecar {sidecar.name} is not a JSON object", reason="bad_metadata"
        )
    return fields
