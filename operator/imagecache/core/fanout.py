"""Fan-out for fleet fill (SPEC §2.9, §4.5): which source each target of a request fills from.

Pure: plain data in, a plan out; no clock, no I/O. The reconciler calls `plan_fanout` once per
request and tick, then ``PUT``s each planned target (with ``X-Image-Cache-Source`` naming the
peer when there is one) and leaves the others waiting for the next tick.

The plan, with ``spec.fanout = {enabled, seeds, width}``:

- a target whose agent holds the image (``cached``, for this request or any other, as the
  agents' listings show) is a *peer*; it serves at most `width` targets at once: those filling
  from it now (its *load*, including transfers for other requests) and those planned here;
- a target to fill takes the least loaded peer with a free slot (ties: the lowest endpoint);
- while no peer exists, at most `seeds` targets read the upstream at once (those already filling
  from the upstream count); the others wait for a peer;
- when every peer is at `width`, a target waits (it is planned again next tick);
- ``enabled: false``: every target reads the upstream, as before fan-out.

A peer that fails needs nothing here: its agent falls back to the upstream on its own, and the
next plan sees that target filling from the upstream (or cached), never waiting on the peer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

UPSTREAM = "upstream"
"""The source of a target that reads the upstream (what agents report, too)."""

SEEDS_MAX = 64
WIDTH_MAX = 64

Observed = Literal["cached", "filling", "to_fill", "idle"]
"""A target as this tick sees it: holds the image; is filling it; is to be ``PUT`` now;
neither (e.g. a failure not yet due for another attempt, a pod not Ready)."""


@dataclass(frozen=True)
class FanoutSpec:
    """``spec.fanout`` with its defaults (the CRD's: true, 1, 4)."""

    enabled: bool = True
    seeds: int = 1
    width: int = 4


def fanout_spec(spec: Mapping[str, Any]) -> FanoutSpec:
    """``spec.fanout`` read defensively: a missing or out-of-range field takes its default."""
    raw = spec.get("fanout")
    fanout = raw if isinstance(raw, Mapping) else {}
    defaults = FanoutSpec()

    def bounded(name: str, default: int, top: int) -> int:
        value = fanout.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top:
            return value
        return default

    enabled = fanout.get("enabled")
    return FanoutSpec(
        enabled=enabled if isinstance(enabled, bool) else defaults.enabled,
        seeds=bounded("seeds", defaults.seeds, SEEDS_MAX),
        width=bounded("width", defaults.width, WIDTH_MAX),
    )


@dataclass(frozen=True)
class TargetView:
    """One target: its name, its agent's base URL (as the operator addresses it), what it is
    doing, and for a ``filling`` target where from (`UPSTREAM`, a peer endpoint, or None when
    not known: counted as the upstream)."""

    name: str
    endpoint: str
    observed: Observed
    source: str | None = None


def plan_fanout(
    *,
    targets: Sequence[TargetView],
    spec: FanoutSpec,
    loads: Mapping[str, int] | None = None,
) -> dict[str, str | None]:
    """Per target to ``PUT`` now: the peer endpoint to fill from, or None for the upstream.

    Targets ``to_fill`` that are not in the answer wait. `loads` counts the transfers each
    endpoint serves for other requests (this request's own are counted from `targets`).
    """
    to_fill = sorted((t for t in targets if t.observed == "to_fill"), key=lambda t: t.name)
    if not spec.enabled:
        return {t.name: None for t in to_fill}
    peers = sorted({t.endpoint for t in targets if t.observed == "cached"})
    load = {peer: (loads or {}).get(peer, 0) for peer in peers}
    readers = 0
    for target in targets:
        if target.observed != "filling":
            continue
        if target.source in load:
            load[target.source] += 1
        elif target.source is None or target.source == UPSTREAM:
            readers += 1
    plan: dict[str, str | None] = {}
    for target in to_fill:
        free = [p for p in peers if p != target.endpoint and load[p] < spec.width]
        if free:
            peer = min(free, key=lambda p: (load[p], p))
            load[peer] += 1
            plan[target.name] = peer
        elif not peers and readers < spec.seeds:
            readers += 1
            plan[target.name] = None
    return plan
