"""What a (re)start makes of the stored records and the files it finds (SPEC §2.5 durability).

The database and the cache directory can disagree after a crash: a download was renamed into
``images/`` but its record not yet saved as cached, a record says cached but the file is gone
or short, a partial file has no record. `plan_recovery` decides, from what is stored and what
is on disk, which records the agent goes on with and which files and rows must go. The rule is
the one the agent promises: nothing is listed that is not complete, and queued or interrupted
downloads resume from the bytes already in ``incomplete/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from imagecache.core import images
from imagecache.core.images import ImageRecord


@dataclass
class RecoveryPlan:
    records: list[ImageRecord] = field(default_factory=list)
    """Every record the agent goes on with (queued ones carry their resumed byte count)."""
    changed: list[ImageRecord] = field(default_factory=list)
    """Records among `records` that differ from what is stored: to be saved."""
    dropped: list[str] = field(default_factory=list)
    """Ids whose rows must be deleted (listed cached, but the file is missing or short)."""
    stray_images: list[str] = field(default_factory=list)
    """Files in ``images/`` that no cached record vouches for."""
    stray_partials: list[str] = field(default_factory=list)
    """Files in ``incomplete/`` that no queued record will resume."""


def plan_recovery(
    stored: Iterable[ImageRecord],
    *,
    image_files: Mapping[str, int],
    partial_files: Mapping[str, int],
) -> RecoveryPlan:
    """The plan for the stored records, given ``images/`` and ``incomplete/`` (name → size)."""
    plan = RecoveryPlan()
    for record in stored:
        recovered = images.recover(record)
        if recovered is None:
            plan.dropped.append(record.image_id)
            continue
        on_disk = image_files.get(record.image_id)
        if recovered.state == "cached" and (on_disk is None or on_disk != record.size):
            plan.dropped.append(record.image_id)  # listed but not complete: forget it
            continue
        if recovered.state == "queued":
            recovered = images.progress(recovered, done=partial_files.get(record.image_id, 0))
        if recovered != record:
            plan.changed.append(recovered)
        plan.records.append(recovered)
    cached = {r.image_id for r in plan.records if r.state == "cached"}
    queued = {r.image_id for r in plan.records if r.state == "queued"}
    plan.stray_images = sorted(set(image_files) - cached)
    plan.stray_partials = sorted(set(partial_files) - queued)
    return plan
