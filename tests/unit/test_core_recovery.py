"""`plan_recovery` and `prune_invalid`: what a restart keeps, resumes, adopts, rejects and deletes
(SPEC §2.5; issue 11 "startup trust").

Covers: complete cached images kept; missing or short files forgotten; interrupted downloads
resumed with their bytes; strays removed; sealed images re-adopted when the database lost their
rows (or was deleted), and when a crash came between the rename and the row's update; a sealed
file whose identity changed is kept only if its re-hash matches, else rejected; `needs_rehash`
names exactly those files; ``invalid/`` pruned to the newest within count and bytes.
"""

from __future__ import annotations

import pytest

from imagecache.core.images import ImageRecord, State
from imagecache.core.recovery import (
    FileFacts,
    Seal,
    needs_rehash,
    plan_recovery,
    prune_invalid,
)

MD5 = "0" * 32
OTHER_MD5 = "f" * 32


def rec(image_id: str, state: State, *, size: int | None = None, seq: int = 1) -> ImageRecord:
    return ImageRecord(image_id=image_id, state=state, seq=seq, size=size)


def facts(size: int, inode: int = 7, mtime_ns: int = 100) -> FileFacts:
    return FileFacts(size=size, inode=inode, mtime_ns=mtime_ns)


def seal(size: int, inode: int = 7, mtime_ns: int = 100) -> Seal:
    return Seal(size=size, digest=MD5, md5=MD5, inode=inode, mtime_ns=mtime_ns, cached_at=50.0)


def test_complete_cached_image_is_kept_unchanged() -> None:
    plan = plan_recovery(
        [rec("a", "cached", size=10)], image_files={"a": facts(10)}, partial_files={}
    )
    assert [r.image_id for r in plan.records] == ["a"]
    assert plan.changed == [] and plan.dropped == [] and plan.adopted == []
    assert plan.stray_images == [] and plan.stray_partials == []


def test_cached_record_whose_file_is_missing_or_short_is_forgotten() -> None:
    stored = [rec("gone", "cached", size=10), rec("short", "cached", size=10)]
    plan = plan_recovery(stored, image_files={"short": facts(4)}, partial_files={})
    assert plan.records == []
    assert plan.dropped == ["gone", "short"]
    assert plan.stray_images == ["short"], "the short file goes too: it is never listed"


def test_cached_record_without_size_and_without_file_is_forgotten() -> None:
    plan = plan_recovery([rec("a", "cached", size=None)], image_files={}, partial_files={})
    assert plan.dropped == ["a"] and plan.records == []


def test_interrupted_download_goes_back_to_the_queue_with_its_bytes() -> None:
    plan = plan_recovery(
        [rec("a", "caching", size=100, seq=3)], image_files={}, partial_files={"a": facts(40)}
    )
    [resumed] = plan.records
    assert resumed.state == "queued" and resumed.bytes == 40 and resumed.seq == 3
    assert plan.changed == [resumed]
    assert plan.stray_partials == []


def test_files_no_record_vouches_for_are_strays() -> None:
    stored = [rec("q", "queued"), rec("f", "failed")]
    plan = plan_recovery(
        stored,
        image_files={"renamed-but-not-saved": facts(5)},
        partial_files={"q": facts(1), "f": facts(2), "orphan": facts(3)},
    )
    assert plan.stray_images == ["renamed-but-not-saved"]
    assert plan.stray_partials == ["f", "orphan"], "only a queued record resumes a partial file"
    assert {r.image_id for r in plan.records} == {"q", "f"}


@pytest.mark.parametrize(
    ("stored", "expected_seq"),
    [
        pytest.param([], 1, id="database-empty-or-deleted"),
        pytest.param([rec("other", "queued", seq=9)], 10, id="row-lost-others-kept"),
    ],
)
def test_sealed_image_without_a_row_is_adopted(
    stored: list[ImageRecord], expected_seq: int
) -> None:
    plan = plan_recovery(
        stored, image_files={"a": facts(10)}, partial_files={}, seals={"a": seal(10)}
    )
    adopted = next(r for r in plan.records if r.image_id == "a")
    assert plan.adopted == ["a"] and adopted in plan.changed
    assert (adopted.state, adopted.size, adopted.checksum) == ("cached", 10, MD5)
    assert adopted.seq == expected_seq and adopted.cached_at == 50.0
    assert plan.stray_images == [] and plan.stray_seals == []


def test_crash_between_rename_and_row_update_adopts_instead_of_downloading_again() -> None:
    plan = plan_recovery(
        [rec("a", "caching", size=10, seq=4)],
        image_files={"a": facts(10)},
        partial_files={},
        seals={"a": seal(10)},
    )
    [adopted] = plan.records
    assert adopted.state == "cached" and adopted.seq == 4 and plan.adopted == ["a"]


@pytest.mark.parametrize(
    ("found", "rehashed", "kept"),
    [
        pytest.param(facts(10), {}, True, id="identity-unchanged"),
        pytest.param(facts(10, inode=8), {"a": MD5}, True, id="copied-back-same-bytes"),
        pytest.param(facts(10, mtime_ns=200), {"a": OTHER_MD5}, False, id="same-size-overwrite"),
        pytest.param(facts(10, mtime_ns=200), {}, False, id="changed-and-unreadable"),
        pytest.param(facts(11, mtime_ns=200), {}, False, id="size-changed"),
    ],
)
@pytest.mark.parametrize("with_row", [True, False], ids=["with-row", "row-lost"])
def test_sealed_file_is_trusted_only_while_it_is_what_was_verified(
    found: FileFacts, rehashed: dict[str, str], kept: bool, with_row: bool
) -> None:
    stored = [rec("a", "cached", size=10)] if with_row else []
    plan = plan_recovery(
        stored,
        image_files={"a": found},
        partial_files={},
        seals={"a": seal(10)},
        rehashed=rehashed,
    )
    assert [r.image_id for r in plan.records] == (["a"] if kept else [])
    assert plan.rejected_images == ([] if kept else ["a"])
    assert plan.stray_seals == ([] if kept else ["a"])
    assert plan.stray_images == []


def test_orphan_seal_is_removed_and_unsealed_stray_is_not_adopted() -> None:
    plan = plan_recovery(
        [], image_files={"unsealed": facts(3)}, partial_files={}, seals={"gone": seal(10)}
    )
    assert plan.records == [] and plan.adopted == []
    assert plan.stray_images == ["unsealed"] and plan.stray_seals == ["gone"]


def test_needs_rehash_names_sealed_files_of_the_sealed_size_whose_identity_changed() -> None:
    files = {
        "same": facts(10),
        "touched": facts(10, mtime_ns=1),
        "replaced": facts(10, inode=99),
        "resized": facts(11, mtime_ns=1),
        "unsealed": facts(10, inode=5),
    }
    seals = {name: seal(10) for name in ("same", "touched", "replaced", "resized")}
    assert needs_rehash(files, seals) == ["replaced", "touched"]


@pytest.mark.parametrize(
    ("sizes", "keep", "max_bytes", "doomed"),
    [
        pytest.param([1, 1, 1], 4, 100, [], id="within-bounds"),
        pytest.param([1, 1, 1, 1, 1, 1], 4, 100, ["f0", "f1"], id="count-bound-oldest-go"),
        pytest.param([5, 5, 5], 4, 10, ["f0"], id="byte-bound-oldest-go"),
        pytest.param([1, 50, 1], 4, 10, ["f1"], id="a-too-big-file-goes-newer-small-stay"),
        pytest.param([3], 0, 100, ["f0"], id="keep-none"),
    ],
)
def test_prune_invalid_keeps_the_newest_within_count_and_bytes(
    sizes: list[int], keep: int, max_bytes: int, doomed: list[str]
) -> None:
    files = {f"f{n}": facts(size, mtime_ns=n) for n, size in enumerate(sizes)}  # f0 oldest
    assert prune_invalid(files, keep=keep, max_bytes=max_bytes) == doomed
