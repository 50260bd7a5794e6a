"""Opening a cache directory: load the records, scan the files, plan, repair (SPEC §2.5).

`open_and_repair` is the I/O around the pure `core.recovery.plan_recovery`: open the database,
scan the directory (`scan.scan_cache`: nothing followed, changed files re-hashed), plan, then
carry the plan out — remove what is not a regular file, move changed images to ``invalid/``,
remove strays, orphan seals and resume validators, bound ``invalid/``, and record the repaired
rows. On a full disk a row that cannot be written is only logged: the plan is the same at the
next start, and the agent still starts and serves what it has.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from imagecache.agent.cache import scan
from imagecache.agent.cache.db import Database, DatabaseFull
from imagecache.agent.cache.store import Store
from imagecache.core.recovery import RecoveryPlan, plan_recovery

log = logging.getLogger("imagecache.agent")


async def open_and_repair(store: Store, db: Database) -> RecoveryPlan:
    """The records the agent goes on with, after the directory was made to agree with them."""
    stored = await db.open()
    found = await asyncio.to_thread(
        scan.scan_cache,
        images=store.images,
        seals=store.seals,
        incomplete=store.incomplete,
        invalid=store.invalid,
    )
    plan = plan_recovery(
        stored,
        image_files=found.images,
        partial_files=found.partials,
        seals=found.seals,
        rehashed=found.rehashed,
    )
    await asyncio.to_thread(_repair_files, store, found.unsafe, plan)
    for image_id in plan.rejected_images:
        log.warning(
            "%s changed on disk since it was verified: moved to invalid/",
            image_id,
            extra={"event": "rejected", "image_id": image_id},
        )
    if found.unsafe:
        log.warning(
            "removed %d entries of the cache directory that are not regular files",
            len(found.unsafe),
            extra={"event": "unsafe_removed"},
        )
    if plan.adopted:
        log.info(
            "adopted %d verified images that had no record",
            len(plan.adopted),
            extra={"event": "adopted"},
        )
    try:
        if plan.dropped:
            await db.delete(*plan.dropped)
        if plan.changed:
            await db.save(*plan.changed)
    except DatabaseFull:
        log.warning("disk full: the repaired records are kept in memory until the next start")
    return plan


def _repair_files(store: Store, unsafe: list[Path], plan: RecoveryPlan) -> None:
    scan.remove_unsafe(unsafe)
    for image_id in plan.rejected_images:
        store.reject_image(image_id)
    for image_id in plan.stray_images:
        store.remove(image_id, partial=False)
    for image_id in plan.stray_partials:
        store.remove(image_id, cached=False)
    for image_id in plan.stray_seals:
        store.remove(image_id, cached=False, partial=False, seal=True)
    store.prune_validators()
    store.prune_invalid()
