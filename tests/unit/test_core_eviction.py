"""LRU eviction choice (SPEC §2.5): oldest first, never a pinned image, refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagecache.core.eviction import Candidate, DoesNotFit, choose_victims

CACHED = [
    Candidate("old", 100, 1.0),
    Candidate("mid", 100, 2.0),
    Candidate("new", 100, 3.0),
]


@pytest.mark.parametrize(
    ("pinned", "used", "incoming", "max_size", "victims"),
    [
        pytest.param(set(), 300, 100, 500, [], id="fits"),
        pytest.param(set(), 300, 200, 500, [], id="fits-exactly"),
        pytest.param(set(), 300, 201, 500, ["old"], id="one-victim"),
        pytest.param(set(), 300, 350, 500, ["old", "mid"], id="two-victims"),
        pytest.param({"old"}, 300, 201, 500, ["mid"], id="skips-pinned"),
        pytest.param(set(), 450, 100, 500, ["old"], id="reservations-count"),
        pytest.param(set(), 300, 500, 500, ["old", "mid", "new"], id="everything"),
    ],
)
def test_choose_victims(
    pinned: set[str], used: int, incoming: int, max_size: int, victims: list[str]
) -> None:
    assert (
        choose_victims(
            cached=CACHED, pinned=pinned, used=used, incoming=incoming, max_size=max_size
        )
        == victims
    )


@pytest.mark.parametrize(
    ("pinned", "incoming", "max_size"),
    [
        pytest.param(set(), 501, 500, id="larger-than-max"),
        pytest.param({"old", "mid", "new"}, 300, 500, id="all-pinned"),
        pytest.param({"new"}, 450, 500, id="not-enough-unpinned"),
    ],
)
def test_does_not_fit(pinned: set[str], incoming: int, max_size: int) -> None:
    with pytest.raises(DoesNotFit):
        choose_victims(cached=CACHED, pinned=pinned, used=300, incoming=incoming, max_size=max_size)


def test_ties_break_by_id() -> None:
    cached = [Candidate("b", 10, 1.0), Candidate("a", 10, 1.0)]
    assert choose_victims(cached=cached, pinned=set(), used=20, incoming=5, max_size=20) == ["a"]


def test_candidates_are_not_read_when_the_image_fits() -> None:
    def exploding() -> Iterator[Candidate]:
        raise AssertionError("the cached images were scanned although the image fits")
        yield  # pragma: no cover

    assert choose_victims(cached=exploding(), pinned=set(), used=10, incoming=5, max_size=15) == []
