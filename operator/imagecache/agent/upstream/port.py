"""Where image bytes come from (SPEC §2.2): one narrow port, three implementations.

Implementations: `upstream_file.FileUpstream`, `upstream_http.HttpUpstream` and
`upstream_http.GlanceUpstream`; `app.make_upstream` picks one from settings.

`Upstream.metadata(image_id)` → `ImageMeta`; `Upstream.open(image_id, offset, validator=...)`
→ an async context manager yielding a `ByteStream` (bounded chunks, from `stream.offset`, which
is 0 when the upstream ignored the requested offset or the image changed since `validator`).
`stream.validator` names the version of the image being read (an HTTP ``ETag`` or
``Last-Modified``, a file's size, mtime and inode), or None; it is kept with the partial file
and handed back on resume, so a resume never splices two versions. The upstream is fixed by
settings: ids are only ever appended to the configured base as one quoted path segment, after
`is_valid_image_id` (Glance: `is_uuid`) checked them.

Every request an HTTP upstream makes goes to the configured base and nowhere else: redirects are
never followed (a 3xx is a `BadUpstreamAnswer`), so the upstream token cannot leave it.

What an upstream says is trusted only within bounds, checked here at the boundary
(`image_meta`): ``os_hash_algo`` must be one of `HASH_ALGOS` (fixed-length digests), sizes are
non-negative integers, a metadata document is at most `METADATA_LIMIT` bytes.

Errors (implementations translate aiohttp and OS errors into these, chained; each carries a
short snake_case `reason`, the label of the agent's ``imagecache_failures`` metric)::

    UpstreamError
     ├── ImageNotFound             not_found: the upstream does not have it (permanent)
     ├── PermanentUpstreamError    unauthorized: 401/403, our credentials refused; refused:
     │    │                        another 4xx — both fixable upstream
     │    └── BadUpstreamAnswer    redirect, bad_metadata, metadata_too_large,
     │                             unsupported_hash_algo, no_data, too_long, content_encoding,
     │                             bad_range: the answer breaks the agent's bounds (the image
     │                             fails with this reason)
     └── TransientUpstreamError    connection, stall, upstream_5xx, truncated, auth_unavailable
                                   (retried with backoff)

Translated once each: to a download outcome in `fetching.upstream_errors`, to an HTTP answer in
`http.errors.to_api_error`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

CHUNK_SIZE = 4 * 2**20
FLUSH_AFTER = 0.2  # seconds without data after which a partial chunk is handed on
METADATA_LIMIT = 2**20  # bytes: the largest metadata document (JSON, sidecar) read

# Digests with a fixed length (hashlib.new(name).hexdigest() needs no argument). Not shake_*.
HASH_ALGOS = frozenset(
    {
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha3_224",
        "sha3_256",
        "sha3_384",
        "sha3_512",
        "blake2b",
        "blake2s",
    }
)
DEFAULT_HASH_ALGO = "sha512"


class UpstreamError(Exception):
    """Base of everything an upstream can fail with; `reason` is a short snake_case label."""

    reason = "upstream_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ImageNotFound(UpstreamError):
    """The upstream has no such image."""

    reason = "not_found"


class PermanentUpstreamError(UpstreamError):
    """A refusal that retrying will not fix (a 4xx): the upstream or its credentials need
    fixing, not the image."""

    reason = "refused"


class BadUpstreamAnswer(PermanentUpstreamError):
    """An answer outside the agent's bounds: a redirect, metadata too big or malformed or with
    an unsupported digest, a body longer than declared, no data."""

    reason = "bad_answer"


class TransientUpstreamError(UpstreamError):
    """A failure worth retrying: connection, 5xx, stall, truncated body."""

    reason = "connection"


@dataclass(frozen=True)
class ImageMeta:
    """What the upstream says about an image before any byte is fetched."""

    size: int | None
    status: str = "active"
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None


class ByteStream(Protocol):
    """An open download: bytes from `offset` on, in bounded chunks, of the image's version
    `validator` (None when the upstream names none)."""

    offset: int
    validator: str | None

    def chunks(self) -> AsyncIterator[bytes]: ...


class Upstream(Protocol):
    """The port every upstream implements."""

    async def metadata(self, image_id: str) -> ImageMeta: ...

    def open(
        self, image_id: str, offset: int, *, validator: str | None = None
    ) -> AbstractAsyncContextManager[ByteStream]: ...

    async def close(self) -> None: ...


@dataclass
class ChunkStream:
    """A `ByteStream` over an async generator factory."""

    offset: int
    source: Callable[[], AsyncIterator[bytes]]
    validator: str | None = None

    def chunks(self) -> AsyncIterator[bytes]:
        return self.source()


def optional_text(value: object) -> str | None:
    """A non-empty string field of a metadata document, else None."""
    return value if isinstance(value, str) and value else None


def image_meta(
    *,
    size: object,
    status: object = "active",
    checksum: object = None,
    os_hash_algo: object = None,
    os_hash_value: object = None,
) -> ImageMeta:
    """`ImageMeta` from an upstream's raw fields, within bounds, else `BadUpstreamAnswer`.

    A size that is not a non-negative integer counts as unknown (Glance gives ``null`` before
    upload); an ``os_hash_algo`` outside `HASH_ALGOS` fails the image at once, before any byte
    is fetched (a ``shake_128`` would otherwise pass ``hashlib.new`` and fail only at
    verification, after the whole download).
    """
    algo = optional_text(os_hash_algo)
    if algo is not None and algo.lower() not in HASH_ALGOS:
        raise BadUpstreamAnswer(
            f"unsupported os_hash_algo {algo[:32]!r} (supported: {', '.join(sorted(HASH_ALGOS))})",
            reason="unsupported_hash_algo",
        )
    known = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return ImageMeta(
        size=known,
        status=str(status)[:64] if status is not None else "",
        checksum=optional_text(checksum),
        os_hash_algo=algo.lower() if algo is not None else None,
        os_hash_value=optional_text(os_hash_value),
    )
