"""Where image bytes come from (SPEC §2.2): one narrow port, three implementations.

Implementations: `upstream_file.FileUpstream`, `upstream_http.HttpUpstream` and
`upstream_http.GlanceUpstream`; `app.make_upstream` picks one from settings.

`Upstream.metadata(image_id)` → `ImageMeta`; `Upstream.open(image_id, offset)` → an async
context manager yielding a `ByteStream` (bounded chunks, from `stream.offset`, which is 0 when
the upstream ignored the requested offset). The upstream is fixed by settings: ids are only ever
appended to the configured base, after `is_valid_image_id` checked them.

Errors (implementations translate aiohttp and OS errors into these, chained)::

    UpstreamError
     ├── ImageNotFound        the upstream does not have it (permanent)
     ├── PermanentUpstreamError  any other refusal: 4xx, no data, bad answer (permanent)
     └── TransientUpstreamError  connection failure, 5xx, stall, truncated body (retried)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

CHUNK_SIZE = 4 * 2**20
FLUSH_AFTER = 0.2  # seconds without data after which a partial chunk is handed on


class UpstreamError(Exception):
    """Base of everything an upstream can fail with."""


class ImageNotFound(UpstreamError):
    """The upstream has no such image."""


class PermanentUpstreamError(UpstreamError):
    """A refusal that retrying will not fix."""


class TransientUpstreamError(UpstreamError):
    """A failure worth retrying: connection, 5xx, stall, truncated body."""


@dataclass(frozen=True)
class ImageMeta:
    """What the upstream says about an image before any byte is fetched."""

    size: int | None
    status: str = "active"
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None


class ByteStream(Protocol):
    """An open download: bytes from `offset` on, in bounded chunks."""

    offset: int

    def chunks(self) -> AsyncIterator[bytes]: ...


class Upstream(Protocol):
    """The port every upstream implements."""

    async def metadata(self, image_id: str) -> ImageMeta: ...

    def open(self, image_id: str, offset: int) -> AbstractAsyncContextManager[ByteStream]: ...

    async def close(self) -> None: ...


@dataclass
class ChunkStream:
    """A `ByteStream` over an async generator factory."""

    offset: int
    source: Callable[[], AsyncIterator[bytes]]

    def chunks(self) -> AsyncIterator[bytes]:
        return self.source()


def optional_text(value: object) -> str | None:
    """A non-empty string field of a metadata document, else None."""
    return value if isinstance(value, str) and value else None
