"""Events through both APIs, stored once, driven with the official ``kubernetes`` client.

Covers: a core v1 Event and an events.k8s.io/v1 Event are both listed through the core API by
``involvedObject`` field selector, and the events.k8s.io view shows ``regarding``/``note``;
``eventTime`` is a MicroTime (six fraction digits or 400), which the official client's own
serialisation misses for a whole second.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from kubernetes.client import ApiClient, CoreV1Api, EventsV1Api
from kubernetes.client.exceptions import ApiException

TARGET = {
    "apiVersion": "imagecache.dev/v1alpha1",
    "kind": "ImageCacheRequest",
    "name": "x",
    "namespace": "default",
}


def new_event(name: str, event_time: datetime) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "regarding": TARGET,
        "reason": "Cached",
        "note": "cached",
        "type": "Normal",
        "action": "Cache",
        "reportingController": "imagecache.dev/operator",
        "reportingInstance": "op-1",
        "eventTime": event_time,
    }


def test_core_and_new_events_are_one_store(k8s: ApiClient) -> None:
    core = CoreV1Api(k8s)
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "x.1"},
            "involvedObject": TARGET,
            "reason": "Queued",
            "message": "queued",
            "type": "Normal",
        },
    )
    created = EventsV1Api(k8s).create_namespaced_event(
        "default", new_event("x.2", datetime(2025, 1, 1, 0, 0, 0, 123456, UTC))
    )
    assert created.note == "cached"
    assert created.event_time == datetime(2025, 1, 1, 0, 0, 0, 123456, UTC)
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=x")
    assert [(e.reason, e.message) for e in found.items] == [
        ("Queued", "queued"),
        ("Cached", "cached"),
    ]
    assert core.list_namespaced_event("default", field_selector="involvedObject.name=y").items == []
    # Raw JSON: the client cannot read an events.k8s.io Event without eventTime (a core event
    # seen through the new API), which real API servers answer too.
    listed = EventsV1Api(k8s).list_namespaced_event(
        "default", field_selector="regarding.name=x", _preload_content=False
    )
    assert [e["note"] for e in json.loads(listed.data)["items"]] == ["queued", "cached"]


def test_event_time_is_a_micro_time(k8s: ApiClient) -> None:
    with pytest.raises(ApiException) as refused:
        EventsV1Api(k8s).create_namespaced_event(
            "default", new_event("x.3", datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC))
        )
    assert refused.value.status == 400
