"""Unit tests of the pure parts behind the operator at fleet scale.

Covers: write expectations (`core.expectations`: the base status is ours while the watch is
older than our write; echoes recognised); event correlation (`core.correlation`: a repeat
within the window patches the series, bounded memory); the observed world (`core.observed`:
which requests a pod change affects; a resync forgets what a list no longer has but keeps what
the watch showed after the list began); listing diffs (`core.listings`); the wire check of an
agent's listing (`core.wire.parse_listing`); the bound on ``status.targets``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagecache.core.correlation import EventCorrelator
from imagecache.core.expectations import WriteExpectations, Written, is_older
from imagecache.core.listings import changed_images, image_signatures
from imagecache.core.observed import Observed
from imagecache.core.planning import RequestView
from imagecache.core.status import (
    MAX_STATUS_TARGETS,
    ResolvedTarget,
    TargetState,
    build_status,
)
from imagecache.core.targets import PodInfo
from imagecache.core.wire import LISTING_LIMIT, WireError, load_listing, parse_listing


def _view(name: str, rv: str = "1", **spec: Any) -> RequestView:
    return RequestView(
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        generation=1,
        resource_version=rv,
        spec={"image": "img", **spec},
        status={},
    )


def _pod(name: str, **labels: str) -> PodInfo:
    return PodInfo(
        namespace="ns",
        name=name,
        uid=f"u-{name}",
        ip="10.0.0.1",
        phase="Running",
        ready=True,
        labels=labels,
    )


# -- expectations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "written", "older"),
    [("5", "7", True), ("7", "7", False), ("9", "7", False), ("x", "7", False)],
)
def test_is_older(observed: str, written: str, older: bool) -> None:
    assert is_older(observed, written) is older


def test_the_base_is_our_write_until_the_watch_catches_up() -> None:
    expectations: WriteExpectations[str] = WriteExpectations()
    ours = {"phase": "Cached"}
    expectations.wrote("k", Written(uid="u", resource_version="7", status=ours, at=0))
    late_echo = {"phase": "Queued"}  # our earlier write (rv 5), delivered after the later one
    assert expectations.base("k", uid="u", resource_version="5", status=late_echo) is ours
    assert not expectations.satisfied("k", uid="u", resource_version="5")
    assert expectations.is_echo("k", uid="u", resource_version="7")
    edited = {"phase": "Failed"}
    assert expectations.base("k", uid="u", resource_version="9", status=edited) is edited
    # another object of the same name: our memory does not apply
    assert expectations.base("k", uid="other", resource_version="5", status=late_echo) is late_echo
    expectations.caught_up("k", uid="u", resource_version="5")  # not yet: ours is still needed
    assert expectations.base("k", uid="u", resource_version="5", status=late_echo) is ours
    expectations.caught_up("k", uid="u", resource_version="7")  # the watch shows our write
    written = expectations.last("k", "u")
    assert written is not None and written.status == {} and written.resource_version == "7"


# -- event correlation -------------------------------------------------------------------------


def test_a_repeated_event_patches_its_series_within_the_window() -> None:
    correlator = EventCorrelator(window=600, max_entries=2)
    key = ("ns", "u", "Warning", "AgentUnreachable", "down")
    first = correlator.correlate(key, now=0)
    assert first.series is None and first.count == 1
    correlator.posted(key, name="r.1", count=1, now=0)
    again = correlator.correlate(key, now=10)
    assert again.series is not None and again.series.name == "r.1" and again.count == 2
    correlator.posted(key, name="r.1", count=2, now=10)
    assert correlator.correlate(key, now=700).series is None  # past the window: a new Event
    other = ("ns", "u", "Normal", "Cached", "ok")
    correlator.posted(other, name="r.2", count=1, now=11)
    correlator.posted(("ns", "v", "Normal", "Cached", "ok"), name="r.3", count=1, now=12)
    assert correlator.correlate(key, now=13).series is None  # evicted: bounded memory


# -- the observed world ------------------------------------------------------------------------


def test_a_pod_change_affects_only_the_requests_that_look_at_it() -> None:
    observed = Observed()
    observed.set_request(_view("named", pod="p"))
    observed.set_request(_view("selecting", podSelector={"matchLabels": {"app": "glance"}}))
    observed.set_request(_view("elsewhere", pod="q"))
    assert observed.set_pod(_pod("p")) == {("ns", "named")}
    assert observed.set_pod(_pod("p")) == set()  # nothing the operator reads changed
    assert observed.set_pod(_pod("g", app="glance")) == {("ns", "selecting")}
    # relabelled out of the selector: still affects it (a target went away)
    assert observed.set_pod(_pod("g", app="other")) == {("ns", "selecting")}
    assert observed.drop_pod("ns", "q") == set()
    assert observed.set_pod(_pod("q")) == {("ns", "elsewhere")}


def test_a_resync_forgets_what_the_list_lacks_but_keeps_newer_objects() -> None:
    observed = Observed()
    observed.set_request(_view("gone", rv="3", pod="p"))
    observed.set_request(_view("kept", rv="4", pod="p"))
    observed.set_request(_view("newer", rv="12", pod="p"))  # created after the list was taken
    resynced = observed.replace_requests(
        [_view("kept", rv="4", pod="p"), _view("changed", rv="8", pod="p")], list_version="10"
    )
    assert [v.name for v in resynced.gone] == ["gone"]
    assert resynced.changed == {("ns", "changed")}
    assert set(observed.requests) == {("ns", "kept"), ("ns", "newer"), ("ns", "changed")}


def test_a_pod_resync_keeps_pods_the_watch_showed_after_the_list_began() -> None:
    observed = Observed()
    observed.set_request(_view("r", pod="deleted"))
    observed.set_pod(_pod("deleted"))
    since = observed.pod_epoch
    observed.set_pod(_pod("fresh"))  # arrives through the watch while the list is running
    affected = observed.replace_pods([], since=since)
    assert affected == {("ns", "r")}
    assert set(observed.pods_in("ns")) == {"fresh"}


# -- listings and the wire ---------------------------------------------------------------------


def test_only_images_whose_entry_changed_differ() -> None:
    before = image_signatures(
        {"cached_images": [{"image_id": "a", "size": 1}], "queued_images": ["b", "c"]}  # type: ignore[typeddict-item]
    )
    after = image_signatures(
        {"cached_images": [{"image_id": "a", "size": 1}], "queued_images": ["c"]}  # type: ignore[typeddict-item]
    )
    changes = changed_images(before, after)
    assert changes is not None
    assert changes.state == {"b"}  # gone
    assert changes.progress == {"c"}  # moved up the queue
    unchanged = changed_images(after, after)
    assert unchanged is not None and not unchanged.state and not unchanged.progress
    assert changed_images(None, after) is None


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({"cached_images": [1]}, "cached_images[0]: not an object", id="int-entry"),
        pytest.param([], "not a JSON object", id="list"),
        pytest.param({"queued_images": []}, "cached_images: not a list", id="no-cached"),
        pytest.param({"cached_images": [], "queued_images": [3]}, "queued_images", id="queued"),
        pytest.param(
            {"cached_images": [{"image_id": "a", "size": "big"}]}, "size: not a number", id="size"
        ),
        pytest.param(
            {"cached_images": [], "caching_images": [{"image_id": 5}]}, "image_id", id="id"
        ),
    ],
)
def test_a_malformed_listing_is_refused_with_the_field_named(document: Any, problem: str) -> None:
    with pytest.raises(WireError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_listing(document)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b'{"cached_images": [], "x": NaN}', "NaN is not JSON", id="nan"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deep", id="deep"),
        pytest.param(b'{"cached_images": [', "not JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not JSON", id="not-utf8"),
        pytest.param(b" " * (LISTING_LIMIT + 1), "larger than", id="too-large"),
    ],
)
def test_a_listing_body_that_is_not_bounded_plain_json_is_refused(
    body: bytes, problem: str
) -> None:
    with pytest.raises(WireError, match=problem):
        load_listing(body)


def test_a_good_listing_passes_with_missing_lists_filled() -> None:
    listing = parse_listing({"cached_images": [{"image_id": "a", "size": 3, "x": "new"}]})
    assert listing["queued_images"] == [] and listing["failed_images"] == []


# -- the bound on status.targets ---------------------------------------------------------------


def test_status_targets_are_bounded_and_the_summary_counts_all() -> None:
    pods = [_pod(f"p{n:04d}") for n in range(MAX_STATUS_TARGETS + 50)]
    targets = [
        ResolvedTarget(p.name, p, TargetState(phase="Cached", reason="Cached")) for p in pods
    ]
    status = build_status(
        previous={}, targets=targets, selector_form=True, generation=1, now=datetime.now(UTC)
    )
    assert len(status["targets"]) == MAX_STATUS_TARGETS == 100
    assert status["targets"][0]["pod"] == "p0000"
    assert status["summary"]["total"] == MAX_STATUS_TARGETS + 50
    assert status["summary"]["cached"] == MAX_STATUS_TARGETS + 50
