"""The cache directory on disk: complete images, partial downloads, rejected files.

Layout under ``cache_dir``::

    images/<id>        complete, verified images (the only files ever served)
    seals/<id>.json    what was verified of images/<id> at commit (see scan.py)
    incomplete/<id>    downloads in progress (resumed from here after a crash)
    resume/<id>        the upstream's version (validator) incomplete/<id> was read from
    invalid/<id>       downloads that failed verification, kept for inspection (the newest
                       `INVALID_KEEP`, within ``invalid_max_bytes``)
    imagecache.db      the SQLite database (see db.py)

Every file the agent reads, serves or writes here is opened through `nofollow.open_regular`
(``O_NOFOLLOW``, regular files only): a symlink swapped in while the agent runs is refused,
never followed. Renames and unlinks act on the directory entry itself, never on a link's target.

Every method here blocks (file I/O); callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import time
from pathlib import Path
from typing import BinaryIO

from imagecache.agent.cache import scan
from imagecache.agent.cache.nofollow import NotRegularFile, open_regular
from imagecache.core.recovery import INVALID_KEEP, FileFacts, prune_invalid

PROBE_BLOCK = b"\0" * 4096
VALIDATOR_BYTES = 1024  # a validator file larger than this is no validator


class Store:
    """File operations on one cache directory; ids are validated before they get here."""

    def __init__(self, root: Path, *, invalid_max_bytes: int | None = None) -> None:
        self.root = root
        self.images = root / "images"
        self.seals = root / "seals"
        self.incomplete = root / "incomplete"
        self.resume = root / "resume"
        self.invalid = root / "invalid"
        self.database = root / "imagecache.db"
        self.invalid_max_bytes = invalid_max_bytes
        self.invalid_files = 0
        """Files in ``invalid/`` after the last `prune_invalid` (read by the metrics)."""
        self.invalid_bytes = 0
        """Their bytes (counted here: they are on the disk, outside ``max_size``)."""

    def create(self) -> None:
        for directory in (
            self.root,
            self.images,
            self.seals,
            self.incomplete,
            self.resume,
            self.invalid,
        ):
            directory.mkdir(parents=True, exist_ok=True)

    def seal_path(self, image_id: str) -> Path:
        return self.seals / f"{image_id}.json"

    def image_path(self, image_id: str) -> Path:
        return self.images / image_id

    def partial_path(self, image_id: str) -> Path:
        return self.incomplete / image_id

    def partial_size(self, image_id: str) -> int:
        """Bytes in the partial file (0 when missing or not a regular file)."""
        try:
            info = self.partial_path(image_id).lstat()
        except OSError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def open_partial(self, image_id: str, keep: int) -> BinaryIO:
        """The partial file (created if missing) opened for writing after its first `keep`
        bytes. Something else in its place (a symlink, a fifo) is unlinked, never written
        through, and `NotRegularFile` raised: the next attempt starts afresh."""
        path = self.partial_path(image_id)
        try:
            handle = open_regular(path, os.O_WRONLY | os.O_CREAT)
        except NotRegularFile:
            self._unlink_stray(path)
            raise
        try:
            handle.truncate(keep)
            handle.seek(keep)
        except BaseException:
            handle.close()
            raise
        return handle

    def validator_path(self, image_id: str) -> Path:
        return self.resume / image_id

    def read_validator(self, image_id: str) -> str | None:
        """The upstream version the partial file was read from, or None when unknown."""
        try:
            fd = os.open(self.validator_path(image_id), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(VALIDATOR_BYTES + 1)
        except OSError:
            return None
        if not 0 < len(data) <= VALIDATOR_BYTES or not data.isascii():
            return None
        text = data.decode("ascii")
        return text if text.isprintable() else None

    def keep_validator(self, image_id: str, validator: str | None) -> None:
        """Record the version a new (emptied) partial file is read from, or forget it.

        Called after the partial was emptied and before its first byte: a crash can leave an
        old validator with new bytes (a resume then starts over), not a new validator with old
        bytes (journaling filesystems keep the truncation and the rename in order). No fsync:
        a validator lost in a crash only means no resume.
        """
        path = self.validator_path(image_id)
        if validator is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, validator.encode("ascii"))
        finally:
            os.close(fd)
        os.replace(temporary, path)

    def prune_validators(self) -> None:
        """Forget the validators whose partial file is gone (and half-written ones)."""
        for name in scan.regular_files(self.resume):
            if not self.partial_path(name).is_file():
                with contextlib.suppress(FileNotFoundError):
                    (self.resume / name).unlink()

    def read_partial(self, image_id: str) -> io.FileIO:
        """The partial file opened for reading (re-hashing before a resume); as `open_partial`
        for something else in its place."""
        path = self.partial_path(image_id)
        try:
            return open_regular(path)
        except NotRegularFile:
            self._unlink_stray(path)
            raise

    @staticmethod
    def _unlink_stray(path: Path) -> None:
        """Remove a non-regular entry (the link itself; a directory is left for the scan)."""
        with contextlib.suppress(OSError):
            path.unlink()

    def open_image(self, image_id: str) -> io.FileIO:
        """A cached image opened for serving; `NotRegularFile` when it is not a regular file."""
        return open_regular(self.image_path(image_id))

    def commit(
        self, image_id: str, handle: BinaryIO, *, seal: scan.SealFacts | None = None
    ) -> None:
        """fsync the partial file, seal it (with `seal`'s digest), rename it into images/, fsync.

        The seal is written before the rename: a crash in between leaves a sealed image that
        the next start adopts, never an image that claims more than was verified.
        """
        os.fsync(handle.fileno())
        if seal is not None:
            scan.write_seal(
                self.seal_path(image_id), os.fstat(handle.fileno()), seal, now=time.time()
            )
        handle.close()
        os.replace(self.partial_path(image_id), self.image_path(image_id))
        _fsync_dir(self.images)
        with contextlib.suppress(FileNotFoundError):
            self.validator_path(image_id).unlink()

    def reject(self, image_id: str) -> None:
        """Move a partial that failed verification to invalid/ (which stays bounded)."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.partial_path(image_id), self.invalid / image_id)
        with contextlib.suppress(FileNotFoundError):
            self.validator_path(image_id).unlink()
        self.prune_invalid()

    def reject_image(self, image_id: str) -> None:
        """Move a cached file whose content changed to invalid/, and drop its seal."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.image_path(image_id), self.invalid / image_id)
        with contextlib.suppress(FileNotFoundError):
            self.seal_path(image_id).unlink()
        self.prune_invalid()

    def prune_invalid(self) -> None:
        """Keep the newest `INVALID_KEEP` rejected files within ``invalid_max_bytes``, and
        count what stays (`invalid_files`, `invalid_bytes`)."""
        budget = self.invalid_max_bytes if self.invalid_max_bytes is not None else 2**63
        found = scan.regular_files(self.invalid)
        doomed = prune_invalid(found, keep=INVALID_KEEP, max_bytes=budget)
        for name in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.invalid / name).unlink()
        kept = [facts.size for name, facts in found.items() if name not in doomed]
        self.invalid_files, self.invalid_bytes = len(kept), sum(kept)

    def remove(
        self, image_id: str, *, cached: bool = True, partial: bool = True, seal: bool | None = None
    ) -> None:
        """Unlink the image (and its seal) and/or the partial file; missing files are fine."""
        for wanted, path in (
            (cached, self.image_path(image_id)),
            (cached if seal is None else seal, self.seal_path(image_id)),
            (partial, self.partial_path(image_id)),
            (partial, self.validator_path(image_id)),
        ):
            if wanted:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def listing(self) -> tuple[dict[str, FileFacts], dict[str, FileFacts]]:
        """The regular files in images/ and in incomplete/ (symlinks are not files here)."""
        return scan.regular_files(self.images), scan.regular_files(self.incomplete)

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
