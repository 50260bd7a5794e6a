"""The thin I/O under `imagecache.core.recovery`: what is in the cache directory, as found.

`scan_cache` reads the directories without following anything: regular files become
`FileFacts` (``lstat``), anything else (a symlink, a directory, a fifo) is reported as unsafe
and later removed, never opened. Seals (``seals/<id>.json``, written by `write_seal` when an
image is committed) are read with a size bound; a seal that cannot be parsed is no seal. A seal
records the digest it vouches with (``algo``, ``digest``: the strongest digest the upstream gave
and the download verified, sha256 when it gave none) and Glance's md5 ``checksum`` when that was
verified; a seal from before digests were named holds only ``md5``. Files whose identity changed
since they were sealed are re-hashed with the seal's algorithm (`rehash`, opened with
``O_NOFOLLOW``, regular files only). Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from imagecache.agent.cache.nofollow import open_regular
from imagecache.core.recovery import FileFacts, Seal, needs_rehash

MAX_SEAL_BYTES = 4096
SEAL_SUFFIX = ".json"


@dataclass(frozen=True)
class SealFacts:
    """What a download verified, for its seal: the digest it vouches with, and Glance's md5
    when the upstream gave one (served as ``Content-MD5``)."""

    algo: str
    digest: str
    md5: str | None = None


@dataclass
class CacheScan:
    images: dict[str, FileFacts] = field(default_factory=dict)
    partials: dict[str, FileFacts] = field(default_factory=dict)
    seals: dict[str, Seal] = field(default_factory=dict)
    rehashed: dict[str, str] = field(default_factory=dict)
    """Digests (with each seal's algorithm) of the sealed files whose identity changed
    (`core.recovery.needs_rehash`)."""
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
        with open_regular(path) as handle:
            data = handle.read(MAX_SEAL_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_SEAL_BYTES:
        return None
    try:
        doc = json.loads(data)
        md5 = doc.get("md5")
        algo = str(doc.get("algo", "md5"))
        if algo not in hashlib.algorithms_guaranteed or algo.startswith("shake"):
            return None
        return Seal(
            size=int(doc["size"]),
            algo=algo,
            digest=str(doc["digest"] if "algo" in doc else md5),
            md5=str(md5) if md5 is not None else None,
            inode=int(doc["inode"]),
            mtime_ns=int(doc["mtime_ns"]),
            cached_at=float(doc["cached_at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # junk: no seal
        return None


def write_seal(path: Path, info: os.stat_result, facts: SealFacts, *, now: float) -> None:
    """Write a seal atomically (temporary file, fsync, rename, fsync the directory)."""
    doc = {
        "size": info.st_size,
        "algo": facts.algo,
        "digest": facts.digest,
        "md5": facts.md5,
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


def rehash(path: Path, algo: str = "md5") -> str | None:
    """The `algo` digest of a regular file, never through a symlink; None when it cannot be
    read."""
    try:
        with open_regular(path) as handle:
            return hashlib.file_digest(handle, algo).hexdigest()
    except OSError:
        return None


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
        digest = rehash(images / image_id, found.seals[image_id].algo)
        if digest is not None:
            found.rehashed[image_id] = digest
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
