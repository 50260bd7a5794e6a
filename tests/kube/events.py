"""One store for both event APIs: ``events.k8s.io/v1`` objects are kept as core ``v1`` Events.

The real API server serves the same events through both groups; kubectl describe reads the
core ones (``involvedObject``), newer clients write ``events.k8s.io/v1`` (``regarding``).
"""

from __future__ import annotations

from typing import Any

# events.k8s.io/v1 field -> core v1 field
_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_BACK = {v: k for k, v in _RENAMES.items()}


def to_core(event: dict[str, Any]) -> dict[str, Any]:
    """An ``events.k8s.io/v1`` Event as the core ``v1`` Event the store keeps."""
    core = {_RENAMES.get(k, k): v for k, v in event.items()}
    core["apiVersion"], core["kind"] = "v1", "Event"
    return core


def from_core(event: dict[str, Any]) -> dict[str, Any]:
    """A stored core ``v1`` Event as ``events.k8s.io/v1`` shows it."""
    new = {_BACK.get(k, k): v for k, v in event.items()}
    new["apiVersion"], new["kind"] = "events.k8s.io/v1", "Event"
    return new


def selector_to_core(selector: str | None) -> str | None:
    """Rename ``regarding.*`` / ``note`` in a field selector to the core field names."""
    if not selector:
        return selector
    for new, core in _RENAMES.items():
        selector = selector.replace(f"{new}.", f"{core}.").replace(f"{new}=", f"{core}=")
    return selector
