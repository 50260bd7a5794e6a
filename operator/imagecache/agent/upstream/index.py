"""Image metadata as Glance shows it (``GET /v2/images/{id}``, ``GET /v2/images``), per upstream.

The `ImageIndex` port has two calls, `show` and `index`; `images_api` serves them. Three
implementations, one per kind of upstream:

- `GlanceImageIndex`: the upstream Glance answers, through the agent's own credentials; its
  documents are passed on untouched (its links are relative, so they point at the agent).
- `FileImageIndex`: every regular file of the directory is an image; the Glance document is
  built from the file and its sidecar ``<id>.json`` (`file_image`), and the listing is filtered,
  sorted and paged here as Glance does (`list_images`).
- `HttpImageIndex`: a plain HTTP server cannot list, so `show` answers from ``HEAD`` and
  `index` only finds an image named by an ``id`` or ``name`` filter (its name is its id).

Ids are checked before any path is built (`GlanceUpstream.image_path`: UUIDs only, quoted as one
segment); sidecars are read by `file.read_sidecar`, so a sidecar outside the one JSON rule
(`documents.load_document`) is the same `BadUpstreamAnswer` here as for a download.

Errors: `upstreams.ImageNotFound` (404), `InvalidQuery` (400), and the upstream's
`TransientUpstreamError`/`UpstreamError` (503), mapped in `images_api`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol
from urllib.parse import urlencode

from imagecache.agent.upstream.file import FileUpstream, read_sidecar
from imagecache.agent.upstream.http import GlanceUpstream
from imagecache.agent.upstream.port import (
    BadUpstreamAnswer,
    ImageNotFound,
    PermanentUpstreamError,
    Upstream,
)
from imagecache.core.ids import is_valid_image_id

Query = Sequence[tuple[str, str]]
Document = dict[str, Any]

DEFAULT_LIMIT = 25  # Glance's limit_param_default
MAX_LIMIT = 1000  # Glance's api_limit_max
SORT_KEYS = frozenset(
    {"name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"}
)
PAGING = frozenset({"limit", "marker", "sort_key", "sort_dir", "member_status"})
IN_FILTERS = frozenset({"id", "name", "status", "container_format", "disk_format"})


class InvalidQuery(Exception):
    """A query Glance answers 400 (bad limit, marker, sort key or direction)."""


class ImageIndex(Protocol):
    """Glance's image documents for one upstream."""

    async def show(self, image_id: str) -> Document: ...

    async def index(self, query: Query) -> Document: ...


class GlanceApi(Protocol):
    """What `GlanceImageIndex` needs from the Glance upstream: an authenticated JSON GET."""

    def image_path(self, image_id: str) -> str: ...

    async def get_json(self, path: str, query: Query = ()) -> tuple[int, Any]: ...


class GlanceImageIndex:
    """The upstream Glance's own answers."""

    def __init__(self, glance: GlanceApi) -> None:
        self.glance = glance

    async def show(self, image_id: str) -> Document:
        status, doc = await self.glance.get_json(self.glance.image_path(image_id))
        return _document(status, doc, image_id)

    async def index(self, query: Query) -> Document:
        status, doc = await self.glance.get_json("/v2/images", query)
        return _document(status, doc, "")


def _document(status: int, doc: Any, image_id: str) -> Document:
    if status == 404:
        raise ImageNotFound(image_id)
    if status == 400:
        message = doc.get("message") if isinstance(doc, dict) else None
        text = str(message or "Bad request").split("<br />")[0].strip()  # webob's markup
        raise InvalidQuery(text)
    if status != 200 or not isinstance(doc, dict):
        raise PermanentUpstreamError(f"upstream answered {status}")
    return doc


class FileImageIndex:
    """Images of a directory, documented from their files and sidecars."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def show(self, image_id: str) -> Document:
        if not is_valid_image_id(image_id):
            raise ImageNotFound(image_id)
        doc = await asyncio.to_thread(read_file_image, self.directory, image_id)
        if doc is None:
            raise ImageNotFound(image_id)
        return doc

    async def index(self, query: Query) -> Document:
        docs = await asyncio.to_thread(read_file_images, self.directory)
        return list_images(docs, query)


class HttpImageIndex:
    """A plain HTTP upstream: `show` from ``HEAD``; `index` finds only a named image."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def show(self, image_id: str) -> Document:
        meta = await self.upstream.metadata(image_id)
        return file_image(
            image_id,
            size=meta.size,
            modified=None,
            sidecar={
                "status": meta.status,
                "checksum": meta.checksum,
                "os_hash_algo": meta.os_hash_algo,
                "os_hash_value": meta.os_hash_value,
            },
        )

    async def index(self, query: Query) -> Document:
        named = {v for k, v in query if k in ("id", "name") and not v.startswith("in:")}
        docs = []
        for image_id in sorted(named):
            try:
                docs.append(await self.show(image_id))
            except ImageNotFound:
                continue
        return list_images(docs, query)


# --- the file upstream's documents (blocking: run in a thread) ---------------------------------
def read_file_image(directory: Path, image_id: str) -> Document | None:
    """The document of ``directory/image_id``, or None when it is not a regular file."""
    path = directory / image_id
    try:
        stat = path.stat()
    except OSError:
        return None
    if not S_ISREG(stat.st_mode):
        return None
    return file_image(
        image_id, size=stat.st_size, modified=stat.st_mtime, sidecar=read_sidecar(path)
    )


def read_file_images(directory: Path) -> list[Document]:
    """Every image of the directory (sidecars ``*.json`` are not images; an image whose
    sidecar is unusable is left out)."""
    docs = []
    with os.scandir(directory) as entries:
        names = [
            e.name
            for e in entries
            if e.is_file() and not e.name.endswith(".json") and is_valid_image_id(e.name)
        ]
    for name in names:
        try:
            doc = read_file_image(directory, name)
        except BadUpstreamAnswer:
            continue  # an unusable sidecar: the image cannot be cached either, so not listed
        if doc is not None:
            docs.append(doc)
    return docs


# --- pure: documents and listings -------------------------------------------------------------
def _isotime(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_image(
    image_id: str, *, size: int | None, modified: float | None, sidecar: Mapping[str, Any]
) -> Document:
    """A Glance image document for a file upstream's image.

    The sidecar's fields win (``name``, ``status``, ``checksum``, ``os_hash_algo``,
    ``os_hash_value``, ``disk_format``, ``container_format``, ``visibility``, and any other
    property); the rest is what Glance would show for an active public raw image of that size:
    name = id, timestamps from the file's mtime.
    """
    created = _isotime(modified)
    doc: Document = {
        "id": image_id,
        "name": image_id,
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "size": size,
        "virtual_size": None,
        "disk_format": "raw",
        "container_format": "bare",
        "min_disk": 0,
        "min_ram": 0,
        "owner": None,
        "tags": [],
        "created_at": created,
        "updated_at": created,
    }
    for key, value in sidecar.items():
        if key in ("id", "size", "self", "file", "schema") or value is None:
            continue
        doc[key] = value
    doc["self"] = f"/v2/images/{image_id}"
    doc["file"] = f"/v2/images/{image_id}/file"
    doc["schema"] = "/v2/schemas/image"
    return doc


def _matches(doc: Document, key: str, wanted: str) -> bool:
    value = doc.get(key)
    if wanted.startswith("in:") and key in IN_FILTERS:
        return str(value) in wanted[3:].split(",")
    if key == "size_min":
        return isinstance(doc.get("size"), int) and doc["size"] >= _int(key, wanted)
    if key == "size_max":
        return isinstance(doc.get("size"), int) and doc["size"] <= _int(key, wanted)
    if key == "tag":
        return wanted in doc.get("tags", [])
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return value is not None and str(value) == wanted


def _sort_value(doc: Document, key: str) -> tuple[bool, int, str, str]:
    """Missing values first (ascending); sizes as numbers, the rest as text; then the id."""
    value = doc.get(key)
    number = value if isinstance(value, int) and not isinstance(value, bool) else 0
    text = "" if value is None or number else str(value)
    return value is not None, number, text, str(doc["id"])


def _int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError as error:
        raise InvalidQuery(f"{key} param must be an integer") from error


def list_images(docs: Iterable[Document], query: Query) -> Document:
    """Glance's ``GET /v2/images`` over `docs`: filters, sort, ``limit``/``marker`` paging.

    Every parameter other than the paging ones is a filter on the document's field of that
    name (``in:a,b`` for the fields Glance allows it on; ``size_min``, ``size_max``, ``tag``).
    Sorted by ``sort_key`` (default ``created_at``) and ``sort_dir`` (default ``desc``), then id.
    ``next`` is given when the page is full, as Glance does.
    """
    params = dict(query)
    limit = _int("limit", params.get("limit", str(DEFAULT_LIMIT)))
    if limit < 0:
        raise InvalidQuery("limit param must be positive")
    limit = min(limit, MAX_LIMIT)
    sort_key = params.get("sort_key", "created_at")
    sort_dir = params.get("sort_dir", "desc")
    if sort_key not in SORT_KEYS:
        raise InvalidQuery(f"Invalid sort key: {sort_key}. It should be one of {sorted(SORT_KEYS)}")
    if sort_dir not in ("asc", "desc"):
        raise InvalidQuery(f"Invalid sort direction: {sort_dir}")
    selected = [
        doc
        for doc in docs
        if all(_matches(doc, key, value) for key, value in query if key not in PAGING)
    ]
    selected.sort(key=lambda d: _sort_value(d, sort_key), reverse=sort_dir == "desc")
    marker = params.get("marker")
    if marker is not None:
        ids = [d["id"] for d in selected]
        if marker not in ids:
            raise InvalidQuery(f"Unable to find image {marker}")
        selected = selected[ids.index(marker) + 1 :]
    page = selected[:limit]
    kept = [(k, v) for k, v in query if k != "marker"]
    body: Document = {
        "images": page,
        "first": "/v2/images" + (f"?{urlencode(kept)}" if kept else ""),
        "schema": "/v2/schemas/images",
    }
    if page and len(page) == limit:
        body["next"] = "/v2/images?" + urlencode([*kept, ("marker", page[-1]["id"])])
    return body


def make_image_index(upstream: Upstream) -> ImageIndex:
    """The index matching the upstream the agent was built with."""
    if isinstance(upstream, FileUpstream):
        return FileImageIndex(upstream.directory)
    if isinstance(upstream, GlanceUpstream):
        return GlanceImageIndex(upstream)
    return HttpImageIndex(upstream)
