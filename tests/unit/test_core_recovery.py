"""`plan_recovery`: what a restart keeps, resumes, forgets and deletes (SPEC §2.5)."""

from __future__ import annotations

from imagecache.core.images import ImageRecord, State
from imagecache.core.recovery import plan_recovery


def rec(image_id: str, state: State, *, size: int | None = None, seq: int = 1) -> ImageRecord:
    return ImageRecord(image_id=image_id, state=state, seq=seq, size=size)


def test_complete_cached_image_is_kept_unchanged() -> None:
    plan = plan_recovery([rec("a", "cached", size=10)], image_files={"a": 10}, partial_files={})
    assert [r.image_id for r in plan.records] == ["a"]
    assert plan.changed == [] and plan.dropped == []
    assert plan.stray_images == [] and plan.stray_partials == []


def test_cached_record_whose_file_is_missing_or_short_is_forgotten() -> None:
    stored = [rec("gone", "cached", size=10), rec("short", "cached", size=10)]
    plan = plan_recovery(stored, image_files={"short": 4}, partial_files={})
    assert plan.records == []
    assert plan.dropped == ["gone", "short"]
    assert plan.stray_images == ["short"], "the short file goes too: it is never listed"


def test_cached_record_without_size_and_without_file_is_forgotten() -> None:
    plan = plan_recovery([rec("a", "cached", size=None)], image_files={}, partial_files={})
    assert plan.dropped == ["a"] and plan.records == []


def test_interrupted_download_goes_back_to_the_queue_with_its_bytes() -> None:
    plan = plan_recovery(
        [rec("a", "caching", size=100, seq=3)], image_files={}, partial_files={"a": 40}
    )
    [resumed] = plan.records
    assert resumed.state == "queued" and resumed.bytes == 40 and resumed.seq == 3
    assert plan.changed == [resumed]
    assert plan.stray_partials == []


def test_files_no_record_vouches_for_are_strays() -> None:
    stored = [rec("q", "queued"), rec("f", "failed")]
    plan = plan_recovery(
        stored,
        image_files={"renamed-but-not-saved": 5},
        partial_files={"q": 1, "f": 2, "orphan": 3},
    )
    assert plan.stray_images == ["renamed-but-not-saved"]
    assert plan.stray_partials == ["f", "orphan"], "only a queued record resumes a partial file"
    assert {r.image_id for r in plan.records} == {"q", "f"}
