"""The fan-out planner (core.fanout): which source each target of a request fills from.

Covers: seeds read the upstream while no peer exists (those already reading count); a peer
serves at most `width` at once (its load from this request and from others); the least loaded
peer first, ties by endpoint; a target never names itself; targets beyond every slot wait;
``enabled: false`` sends everyone to the upstream; a fallen-back target counts as an upstream
reader; ``spec.fanout`` read with defaults and bounds; a fleet fills in waves.
"""

from __future__ import annotations

from typing import Any

import pytest

from imagecache.core.fanout import (
    UPSTREAM,
    FanoutSpec,
    TargetView,
    fanout_spec,
    plan_fanout,
)


def _t(name: str, observed: str, source: str | None = None) -> TargetView:
    return TargetView(name=name, endpoint=f"http://{name}:9292", observed=observed, source=source)  # type: ignore[arg-type]


def _e(name: str) -> str:
    return f"http://{name}:9292"


@pytest.mark.parametrize(
    ("targets", "spec", "loads", "expected"),
    [
        pytest.param(
            [_t("a", "to_fill"), _t("b", "to_fill"), _t("c", "to_fill")],
            FanoutSpec(),
            {},
            {"a": None},
            id="one-seed-reads-the-upstream-the-rest-wait",
        ),
        pytest.param(
            [_t("a", "to_fill"), _t("b", "to_fill"), _t("c", "to_fill")],
            FanoutSpec(seeds=2),
            {},
            {"a": None, "b": None},
            id="two-seeds",
        ),
        pytest.param(
            [_t("a", "filling", UPSTREAM), _t("b", "to_fill")],
            FanoutSpec(),
            {},
            {},
            id="a-seed-already-reading-counts",
        ),
        pytest.param(
            [_t("a", "filling", None), _t("b", "to_fill")],
            FanoutSpec(),
            {},
            {},
            id="an-unknown-source-counts-as-the-upstream",
        ),
        pytest.param(
            [_t("a", "cached"), _t("b", "to_fill"), _t("c", "to_fill")],
            FanoutSpec(width=4),
            {},
            {"b": _e("a"), "c": _e("a")},
            id="a-peer-serves-the-others",
        ),
        pytest.param(
            [_t("a", "cached"), *(_t(n, "to_fill") for n in "bcdef")],
            FanoutSpec(width=2),
            {},
            {"b": _e("a"), "c": _e("a")},
            id="at-most-width-per-peer",
        ),
        pytest.param(
            [
                _t("a", "cached"),
                _t("b", "filling", _e("a")),
                _t("c", "to_fill"),
                _t("d", "to_fill"),
            ],
            FanoutSpec(width=2),
            {},
            {"c": _e("a")},
            id="a-peer-s-current-transfers-count",
        ),
        pytest.param(
            [_t("a", "cached"), _t("c", "to_fill")],
            FanoutSpec(width=2),
            {_e("a"): 2},
            {},
            id="transfers-for-other-requests-count",
        ),
        pytest.param(
            [
                _t("a", "cached"),
                _t("b", "cached"),
                _t("x", "filling", _e("a")),
                *(_t(n, "to_fill") for n in "cde"),
            ],
            FanoutSpec(width=4),
            {},
            {"c": _e("b"), "d": _e("a"), "e": _e("b")},
            id="least-loaded-first-ties-by-endpoint",
        ),
        pytest.param(
            [_t("a", "cached"), _t("b", "filling", UPSTREAM), _t("c", "to_fill")],
            FanoutSpec(width=1),
            {},
            {"c": _e("a")},
            id="a-fallen-back-target-does-not-load-the-peer",
        ),
        pytest.param(
            [_t("a", "cached"), _t("b", "idle"), _t("c", "to_fill")],
            FanoutSpec(width=1),
            {},
            {"c": _e("a")},
            id="idle-targets-are-left-alone",
        ),
        pytest.param(
            [_t("a", "to_fill"), _t("b", "to_fill"), _t("c", "cached")],
            FanoutSpec(enabled=False),
            {},
            {"a": None, "b": None},
            id="disabled-everyone-from-the-upstream",
        ),
    ],
)
def test_plan(
    targets: list[TargetView],
    spec: FanoutSpec,
    loads: dict[str, int],
    expected: dict[str, str | None],
) -> None:
    assert plan_fanout(targets=targets, spec=spec, loads=loads) == expected


def test_a_target_never_names_its_own_agent() -> None:
    same = TargetView(name="b", endpoint=_e("a"), observed="to_fill")
    assert plan_fanout(targets=[_t("a", "cached"), same], spec=FanoutSpec()) == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, FanoutSpec(True, 1, 4), id="defaults"),
        pytest.param({"fanout": {"enabled": False}}, FanoutSpec(False, 1, 4), id="disabled"),
        pytest.param({"fanout": {"seeds": 3, "width": 8}}, FanoutSpec(True, 3, 8), id="given"),
        pytest.param({"fanout": {"seeds": 0, "width": 1000}}, FanoutSpec(), id="out-of-bounds"),
        pytest.param({"fanout": {"seeds": True, "enabled": "no"}}, FanoutSpec(), id="wrong-types"),
        pytest.param({"fanout": "yes"}, FanoutSpec(), id="not-an-object"),
    ],
)
def test_fanout_spec(spec: dict[str, Any], expected: FanoutSpec) -> None:
    assert fanout_spec(spec) == expected


@pytest.mark.parametrize(
    ("pods", "width", "waves"),
    [(8, 2, [1, 2, 5]), (8, 4, [1, 4, 3]), (32, 4, [1, 4, 20, 7])],
)
def test_a_fleet_fills_in_waves(pods: int, width: int, waves: list[int]) -> None:
    """Each wave's fills complete before the next plan: the seed, then peers x width."""
    names = [f"p{i:02d}" for i in range(pods)]
    cached: set[str] = set()
    seen = []
    while len(cached) < pods:
        views = [_t(n, "cached" if n in cached else "to_fill") for n in names]
        plan = plan_fanout(targets=views, spec=FanoutSpec(width=width))
        assert plan, "the fleet must make progress"
        seen.append(len(plan))
        cached |= set(plan)
    assert seen == waves
