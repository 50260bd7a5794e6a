"""The thin I/O under `imagecache.core.recovery`: what is in the cache directory, as found.

`scan_cache` reads the directories without following anything: regular files become
`FileFacts` (``lstat``), anything else (a symlink, a directory, a fifo) is reported as unsafe
and later removed, never opened. Seals (``seals/<id>.json``, written by `write_seal` when an
image is committed) are read with a size bound; a seal that cannot be parsed is no seal. Files
whose identity changed since they were sealed are re-hashed (`rehash`, opened with
``O_NOFOLLOW``). Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from imagecache.core.recovery import FileFacts, Seal, needs_rehash

MAX_SEAL_BYTES = 4096
SEAL_SUFFIX = ".json"
READ_CHUNK = 4 * 2**20


@dataclass
class CacheScan:
    images: dict[str, FileFacts] = field(default_factory=dict)
    partials: dict[str, FileFacts] = field(default_factory=dict)
    seals: dict[str, Seal] = field(default_factory=dict)
    rehashed: dict[str, str] = field(default_factory=dict)
    """md5 of the sealed files whose identity changed (`core.recovery.needs_rehash`)."""
    unsafe: list[Path] = field(default_factory=list)
    """Entries that are not regular files: removed, never followed."""


def _facts(entry: os.DirEntry[str]) -> FileFacts | None:
    info = entry.stat(follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        return None
    return FileFacts(size=info.st_size, inode=info.st_ino, mtime_ns=info.st_mtime_ns)


def _regular(directory: Path, unsafe: list[Path] | None) -> dict[str, FileFacts]:
    found: dict[str, FileFacts] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            facts = _facts(entry)
        except FileNotFoundError:
            continue
        if facts is not None:
            found[entry.name] = facts
        elif unsafe is not None:
            unsafe.append(Path(entry.path))
    return found


def regular_files(directory: Path) -> dict[str, FileFacts]:
    """The regular files of `directory` by name (symlinks and the rest left out)."""
    return _regular(directory, None)


def read_seal(path: Path) -> Seal | None:
    """A seal, or None when it is missing, not a regular file, too big or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_SEAL_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_SEAL_BYTES:
        return None
    try:
        doc = json.loads(data)
        return Seal(
            size=int(doc["size"]),
            md5=str(doc["md5"]),
            inode=int(doc["inode"]),
            mtime_ns=int(doc["mtime_ns"]),
            cached_at=float(doc["cached_at"]),
        )
    except (ValueError, KeyError, TypeError, RecursionError):  # nested junk is no seal either
        return None


def write_seal(path: Path, info: os.stat_result, *, md5: str, now: float) -> None:
    """Write a seal atomically (temporary file, fsync, rename, fsync the directory)."""
    doc = {
        "size": info.st_size,
        "md5": md5,
        "inode": info.st_ino,
        "mtime_ns": info.st_mtime_ns,
        "cached_at": now,
    }
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(doc).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def rehash(path: Path) -> str | None:
    """md5 of a regular file, never through a symlink; None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "rb", buffering=0) as handle:
            while chunk := handle.read(READ_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def scan_cache(*, images: Path, seals: Path, incomplete: Path, invalid: Path) -> CacheScan:
    """Everything `core.recovery.plan_recovery` needs, and the unsafe entries to remove."""
    found = CacheScan()
    found.images = _regular(images, found.unsafe)
    found.partials = _regular(incomplete, found.unsafe)
    _regular(invalid, found.unsafe)
    for name in _regular(seals, found.unsafe):
        if name.endswith(SEAL_SUFFIX):
            seal = read_seal(seals / name)
            if seal is not None:
                found.seals[name.removesuffix(SEAL_SUFFIX)] = seal
    for image_id in needs_rehash(found.images, found.seals):
        md5 = rehash(images / image_id)
        if md5 is not None:
            found.rehashed[image_id] = md5
    return found


def remove_unsafe(paths: list[Path]) -> None:
    """Remove entries that are not regular files (a symlink itself, not what it points to)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            else:
                _remove_tree(path)


def _remove_tree(path: Path) -> None:
    for entry in os.scandir(path):
        child = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(child)
        else:
            child.unlink()
    path.rmdir()
