"""What a (re)start makes of the stored records and the files it finds (SPEC §2.5 durability).

The database and the cache directory can disagree after a crash: a download was renamed into
``images/`` but its record not yet saved as cached, a record says cached but the file is gone
or short, a partial file has no record. The database can also be gone or emptied while the
verified images are still there. `plan_recovery` decides, from what is stored and what is on
disk, which records the agent goes on with and which files and rows must go. The rule is the one
the agent promises: nothing is listed that is not complete and verified, queued or interrupted
downloads resume from the bytes already in ``incomplete/``, and a verified image is not thrown
away because its row was lost.

Files in the cache directory are not trusted as found:

- each committed image has a `Seal` (its sidecar, written before the rename into ``images/``):
  size, the digest it vouches with (its algorithm named), Glance's md5 when verified, and the
  file's identity (inode, mtime) as verified. A file is trusted when its size matches and its
  identity is unchanged, or when a re-hash (`needs_rehash` says which files the scan must
  re-hash, with the seal's algorithm) gives the sealed digest. A sealed file whose content
  changed is rejected;
- a sealed image without a record is adopted as cached (the database was lost or emptied);
- anything that is not a regular file (a symlink, a directory) is never followed: the scan
  reports it and it is removed;
- ``invalid/`` is bounded: `prune_invalid` keeps the newest files within a count and a byte
  budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from imagecache.core import images
from imagecache.core.images import ImageRecord

INVALID_KEEP = 4
"""Rejected downloads kept in ``invalid/`` for inspection (the newest)."""


@dataclass(frozen=True)
class FileFacts:
    """A regular file as the scan found it (``lstat``: a symlink is never a `FileFacts`)."""

    size: int
    inode: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class Seal:
    """What was verified when an image was committed (``seals/<id>.json``)."""

    size: int
    digest: str
    """Hex digest of the file with `algo` (what a re-hash compares with)."""
    inode: int
    mtime_ns: int
    cached_at: float
    algo: str = "md5"
    md5: str | None = None
    """Glance's md5 ``checksum`` when the upstream gave it and it was verified."""


@dataclass
class RecoveryPlan:
    records: list[ImageRecord] = field(default_factory=list)
    """Every record the agent goes on with (queued ones carry their resumed byte count)."""
    changed: list[ImageRecord] = field(default_factory=list)
    """Records among `records` that differ from what is stored (or are new): to be saved."""
    dropped: list[str] = field(default_factory=list)
    """Ids whose rows must be deleted (listed cached, but the file is missing, short or changed)."""
    adopted: list[str] = field(default_factory=list)
    """Sealed, intact images that had no cached record: cached again (also in `changed`)."""
    rejected_images: list[str] = field(default_factory=list)
    """Sealed files in ``images/`` whose content no longer matches: moved to ``invalid/``."""
    stray_images: list[str] = field(default_factory=list)
    """Other files in ``images/`` that no cached record or seal vouches for: removed."""
    stray_partials: list[str] = field(default_factory=list)
    """Files in ``incomplete/`` that no queued record will resume."""
    stray_seals: list[str] = field(default_factory=list)
    """Seals whose image is not kept."""


def _identity_matches(facts: FileFacts, seal: Seal) -> bool:
    return (facts.size, facts.inode, facts.mtime_ns) == (seal.size, seal.inode, seal.mtime_ns)


def needs_rehash(image_files: Mapping[str, FileFacts], seals: Mapping[str, Seal]) -> list[str]:
    """Sealed files of the sealed size whose identity changed: only a re-hash can tell."""
    return sorted(
        image_id
        for image_id, facts in image_files.items()
        if (seal := seals.get(image_id)) is not None
        and facts.size == seal.size
        and not _identity_matches(facts, seal)
    )


def _verdict(
    image_id: str,
    facts: FileFacts | None,
    seal: Seal | None,
    rehashed: Mapping[str, str],
    expected_size: int | None,
) -> str:
    """``"intact"``, ``"missing"`` (no file, or not the expected size) or ``"changed"``."""
    if facts is None:
        return "missing"
    if seal is None:  # committed before seals existed: the size is all there is to check
        return "intact" if expected_size is not None and facts.size == expected_size else "missing"
    if facts.size != seal.size or (expected_size is not None and facts.size != expected_size):
        return "changed"
    if _identity_matches(facts, seal) or rehashed.get(image_id) == seal.digest:
        return "intact"
    return "changed"


def plan_recovery(
    stored: Iterable[ImageRecord],
    *,
    image_files: Mapping[str, FileFacts],
    partial_files: Mapping[str, FileFacts],
    seals: Mapping[str, Seal] | None = None,
    rehashed: Mapping[str, str] | None = None,
) -> RecoveryPlan:
    """The plan for the stored records, given what the scan found.

    `image_files`/`partial_files`: the regular files of ``images/`` and ``incomplete/``;
    `seals`: the readable seals, by id; `rehashed`: the digests (each with its seal's
    algorithm) of the files `needs_rehash` named.
    """
    seals = seals or {}
    rehashed = rehashed or {}
    plan = RecoveryPlan()
    kept: dict[str, ImageRecord] = {}
    originals: dict[str, ImageRecord] = {}
    rejected: set[str] = set()
    for record in stored:
        originals[record.image_id] = record
        recovered = images.recover(record)
        if recovered is None:
            plan.dropped.append(record.image_id)
            continue
        if recovered.state == "cached":
            verdict = _verdict(
                record.image_id,
                image_files.get(record.image_id),
                seals.get(record.image_id),
                rehashed,
                record.size,
            )
            if verdict != "intact":  # listed but not complete and verified: forget it
                plan.dropped.append(record.image_id)
                if verdict == "changed":
                    rejected.add(record.image_id)
                continue
        kept[record.image_id] = recovered
    seq = max((r.seq for r in originals.values()), default=0)
    for image_id in sorted(set(image_files) - rejected):
        known = kept.get(image_id)
        if known is not None and known.state == "cached":
            continue  # verified above
        seal = seals.get(image_id)
        verdict = _verdict(image_id, image_files[image_id], seal, rehashed, None)
        if seal is not None and verdict == "intact" and (known is None or known.state == "queued"):
            # The row was lost, or the crash came between the rename and the row's update.
            if known is None:
                seq += 1
            kept[image_id] = _adopted(image_id, seal, seq=known.seq if known else seq)
            plan.adopted.append(image_id)
            plan.dropped = [i for i in plan.dropped if i != image_id]  # its row is rewritten
        elif seal is not None and verdict == "changed":
            rejected.add(image_id)
        else:
            plan.stray_images.append(image_id)
    for image_id, kept_record in kept.items():
        if kept_record.state == "queued":
            kept_record = images.progress(kept_record, done=_size(partial_files.get(image_id)))
        if kept_record != originals.get(image_id):
            plan.changed.append(kept_record)
        plan.records.append(kept_record)
    cached = {r.image_id for r in plan.records if r.state == "cached"}
    queued = {r.image_id for r in plan.records if r.state == "queued"}
    plan.stray_partials = sorted(set(partial_files) - queued)
    plan.stray_seals = sorted(set(seals) - cached)
    plan.rejected_images = sorted(rejected)
    return plan


def _size(facts: FileFacts | None) -> int:
    return facts.size if facts is not None else 0


def _adopted(image_id: str, seal: Seal, *, seq: int) -> ImageRecord:
    """A cached record rebuilt from an image's seal (the row was lost, the image was not)."""
    return ImageRecord(
        image_id=image_id,
        state="cached",
        seq=seq,
        size=seal.size,
        bytes=seal.size,
        checksum=seal.md5,
        cached_at=seal.cached_at,
        last_accessed=seal.cached_at,
    )


def prune_invalid(
    files: Mapping[str, FileFacts],
    *,
    keep: int = INVALID_KEEP,
    max_bytes: int,
) -> list[str]:
    """The files of ``invalid/`` to delete: all but the newest `keep` that fit in `max_bytes`."""
    newest_first = sorted(files.items(), key=lambda item: (-item[1].mtime_ns, item[0]))
    kept_bytes = 0
    kept = 0
    doomed: list[str] = []
    for name, facts in newest_first:
        if kept < keep and kept_bytes + facts.size <= max_bytes:
            kept += 1
            kept_bytes += facts.size
        else:
            doomed.append(name)
    return sorted(doomed)


def invalid_budget(max_size: int) -> int:
    """Bytes ``invalid/`` may hold: a tenth of the cache size limit."""
    return max_size // 10
