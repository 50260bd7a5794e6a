"""The per-image state machine and report (SPEC §2.5): transitions, idempotence, percent,
queue positions, the Glance cached entry, and retry backoff."""

from __future__ import annotations

import pytest

from imagecache.core import images
from imagecache.core.images import ImageRecord

QUEUED = ImageRecord(image_id="a", state="queued", seq=1, queued_at=10.0)


@pytest.mark.parametrize(
    ("existing", "fresh"),
    [
        pytest.param(None, True, id="unknown"),
        pytest.param(QUEUED, False, id="queued"),
        pytest.param(ImageRecord("a", "caching", 1), False, id="caching"),
        pytest.param(ImageRecord("a", "cached", 1), False, id="cached"),
        pytest.param(ImageRecord("a", "failed", 1, attempts=3, error="x"), True, id="failed"),
    ],
)
def test_enqueue_is_idempotent(existing: ImageRecord | None, fresh: bool) -> None:
    result = images.enqueue(existing, image_id="a", seq=7, now=20.0)
    if not fresh:
        assert result is None
    else:
        assert result == ImageRecord(image_id="a", state="queued", seq=7, queued_at=20.0)


def test_lifecycle() -> None:
    started = images.start(QUEUED, now=11.0, size=1000, resumed_bytes=400)
    assert (started.state, started.attempts, started.bytes, started.size) == (
        "caching",
        1,
        400,
        1000,
    )
    moved = images.progress(started, done=900)
    assert images.percent(moved.bytes, moved.size) == 90
    retry = images.retry_later(moved, error="stalled")
    assert retry.state == "caching" and retry.error == "stalled"
    again = images.start(retry, now=12.0, size=1000, resumed_bytes=900)
    assert again.attempts == 2 and again.error is None
    done = images.finish(again, size=1000, checksum="abc", now=13.0)
    assert (done.state, done.bytes, done.cached_at, done.last_accessed) == (
        "cached",
        1000,
        13.0,
        13.0,
    )
    hit = images.hit(done, now=14.0)
    assert (hit.hits, hit.last_accessed) == (1, 14.0)
    failed = images.fail(again, error="checksum mismatch")
    assert failed.state == "failed" and failed.error == "checksum mismatch"


@pytest.mark.parametrize(
    ("record", "after"),
    [
        pytest.param(ImageRecord("a", "caching", 1, bytes=5), "queued", id="caching-requeued"),
        pytest.param(QUEUED, "queued", id="queued-stays"),
        pytest.param(ImageRecord("a", "cached", 1), "cached", id="cached-stays"),
        pytest.param(ImageRecord("a", "failed", 1), "failed", id="failed-stays"),
    ],
)
def test_recover(record: ImageRecord, after: str) -> None:
    recovered = images.recover(record)
    assert recovered is not None and recovered.state == after


@pytest.mark.parametrize(
    ("done", "size", "expected"),
    [
        pytest.param(0, None, 0, id="unknown-size"),
        pytest.param(0, 0, 0, id="empty"),
        pytest.param(1, 3, 33, id="third"),
        pytest.param(999, 1000, 99, id="never-100-early"),
        pytest.param(1000, 1000, 100, id="done"),
    ],
)
def test_percent(done: int, size: int | None, expected: int) -> None:
    assert images.percent(done, size) == expected


def test_queue_order_and_positions() -> None:
    records = [
        ImageRecord("q2", "queued", 5),
        ImageRecord("c1", "caching", 3),
        ImageRecord("done", "cached", 1),
        ImageRecord("q1", "queued", 4),
        ImageRecord("c0", "caching", 2),
        ImageRecord("bad", "failed", 0),
    ]
    assert [r.image_id for r in images.queue_order(records)] == ["c0", "c1", "q1", "q2"]
    assert images.queue_positions(records) == {"c0": 0, "c1": 0, "q1": 0, "q2": 1}


def test_report() -> None:
    absent = images.report(None, image_id="x", queue_position=None)
    assert absent["state"] == "absent" and absent["percent"] == 0
    caching = ImageRecord("a", "caching", 1, size=200, bytes=50, attempts=1, queued_at=1.0)
    shown = images.report(caching, image_id="a", queue_position=0)
    assert shown["percent"] == 25 and shown["queue_position"] == 0
    cached = images.report(ImageRecord("a", "cached", 1), image_id="a", queue_position=3)
    assert cached["queue_position"] is None
    assert set(shown) == {
        "image_id",
        "state",
        "size",
        "bytes",
        "percent",
        "queue_position",
        "attempts",
        "error",
        "queued_at",
        "started_at",
        "cached_at",
        "source",
        "peer_fallback",
        "waiting_for_room",
        "bytes_needed",
    }
    assert shown["source"] == "upstream" and shown["peer_fallback"] is None
    peer = ImageRecord("a", "caching", 1, source="http://10.0.0.2:9292")
    assert images.report(peer, image_id="a", queue_position=0)["source"] == "http://10.0.0.2:9292"
    fell = images.fall_back(peer, reason="peer failed")
    assert (fell.source, fell.fallback, fell.bytes) == (None, "peer failed", 0)
    assert not shown["waiting_for_room"] and shown["bytes_needed"] is None
    waiting = images.report(caching, image_id="a", queue_position=0, bytes_needed=7)
    assert waiting["waiting_for_room"] and waiting["bytes_needed"] == 7
    assert not images.report(
        ImageRecord("a", "cached", 1), image_id="a", queue_position=None, bytes_needed=7
    )["waiting_for_room"]


def test_cached_entry() -> None:
    record = ImageRecord("a", "cached", 1, size=10, checksum="c", cached_at=5.0, hits=2)
    assert images.cached_entry(record) == {
        "image_id": "a",
        "hits": 2,
        "last_accessed": 5.0,
        "last_modified": 5.0,
        "size": 10,
        "source": "upstream",
        "id": "a",
        "checksum": "c",
    }
