"""The cache directory on disk: complete images, partial downloads, rejected files.

Layout under ``cache_dir``::

    images/<id>        complete, verified images (the only files ever served)
    incomplete/<id>    downloads in progress (resumed from here after a crash)
    invalid/<id>       downloads that failed verification, kept for inspection
    imagecache.db      the SQLite database (see db.py)

Every method here blocks (file I/O); callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PROBE_BLOCK = b"\0" * 4096


class Store:
    """File operations on one cache directory; ids are validated before they get here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.incomplete = root / "incomplete"
        self.invalid = root / "invalid"
        self.database = root / "imagecache.db"

    def create(self) -> None:
        for directory in (self.root, self.images, self.incomplete, self.invalid):
            directory.mkdir(parents=True, exist_ok=True)

    def image_path(self, image_id: str) -> Path:
        return self.images / image_id

    def partial_path(self, image_id: str) -> Path:
        return self.incomplete / image_id

    def partial_size(self, image_id: str) -> int:
        try:
            return self.partial_path(image_id).stat().st_size
        except OSError:
            return 0

    def open_partial(self, image_id: str, keep: int) -> BinaryIO:
        """The partial file opened for appending after its first `keep` bytes."""
        path = self.partial_path(image_id)
        handle = path.open("ab" if path.exists() else "wb", buffering=0)
        handle.truncate(keep)
        handle.seek(keep)
        return handle

    def read_partial(self, image_id: str, chunk_size: int) -> Iterator[bytes]:
        """The bytes already downloaded, for re-hashing before a resume."""
        with self.partial_path(image_id).open("rb", buffering=0) as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def commit(self, image_id: str, handle: BinaryIO) -> None:
        """fsync the partial file, rename it into images/, fsync the directory."""
        os.fsync(handle.fileno())
        handle.close()
        os.replace(self.partial_path(image_id), self.image_path(image_id))
        _fsync_dir(self.images)

    def reject(self, image_id: str) -> None:
        """Move a partial that failed verification to invalid/."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.partial_path(image_id), self.invalid / image_id)

    def remove(self, image_id: str, *, cached: bool = True, partial: bool = True) -> None:
        for wanted, path in (
            (cached, self.image_path(image_id)),
            (partial, self.partial_path(image_id)),
        ):
            if wanted:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def listing(self) -> tuple[dict[str, int], dict[str, int]]:
        """The files in images/ and in incomplete/, each name with its size."""
        return _file_sizes(self.images), _file_sizes(self.incomplete)

    def writable(self) -> bool:
        """Whether a block can be written and flushed in the cache directory now.

        An empty file is not proof: a full filesystem still has inodes. One block of data,
        flushed, is; it is removed again at once.
        """
        probe = self.root / ".probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, PROBE_BLOCK)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        return True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sizes(directory: Path) -> dict[str, int]:
    with os.scandir(directory) as entries:
        return {e.name: e.stat().st_size for e in entries if e.is_file(follow_symlinks=False)}
