"""The choices behind Glance 33's cache maintenance (API v2.18), which `ImageCache.prune` and
`ImageCache.clean` carry out (the routes are in http/maintenance_views.py):

- prune: least-recently-used cached images are evicted until the cache is within ``max_size``
  (it only ever is over after ``max_size`` was lowered across a restart); images being served
  are kept (`prune_victims`);
- clean: the files that failed verification (``invalid/``) and the partial downloads
  (``incomplete/``) no download owns that were not written for ``stall_timeout`` go
  (`clean_directory`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Set
from pathlib import Path

from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims


def prune_victims(
    *, cached: Iterable[Candidate], pinned: Set[str], used: int, max_size: int
) -> list[str]:
    """Least-recently-used images whose eviction brings `used` within `max_size`.

    When the images being served (`pinned`) keep the cache over the limit anyway, every other
    image goes (best effort, as Glance's pruner does).
    """
    candidates = list(cached)
    try:
        return choose_victims(
            cached=candidates, pinned=pinned, used=used, incoming=0, max_size=max_size
        )
    except DoesNotFit:
        ordered = sorted(candidates, key=lambda c: (c.last_accessed, c.image_id))
        return [c.image_id for c in ordered if c.image_id not in pinned]


def clean_directory(
    *, invalid: Path, incomplete: Path, live: Set[str], stalled_before: float
) -> int:
    """Delete ``invalid/*`` and the ownerless partials not written since `stalled_before`.

    Blocking (run in a thread). Returns how many files went.
    """
    removed = 0
    for directory, keep_recent in ((invalid, False), (incomplete, True)):
        with os.scandir(directory) as entries:
            files = [e for e in entries if e.is_file(follow_symlinks=False)]
        for entry in files:
            if keep_recent and (entry.name in live or entry.stat().st_mtime >= stalled_before):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed
