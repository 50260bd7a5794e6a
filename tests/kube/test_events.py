"""Events through both APIs, stored once.

Covers: a core v1 Event and an events.k8s.io/v1 Event are both listed by `events_for` (core
``involvedObject``), and the events.k8s.io view shows ``regarding``/``note``.
"""

from __future__ import annotations

from tests.kube.emulator import Emulator


async def test_core_and_new_events_are_one_store(kube: Emulator) -> None:
    target = {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "name": "x",
        "namespace": "default",
    }
    core = {
        "metadata": {"name": "x.1"},
        "involvedObject": target,
        "reason": "Queued",
        "message": "queued",
        "type": "Normal",
    }
    await kube.client.create("events", core, namespace="default")
    new = {
        "metadata": {"name": "x.2"},
        "regarding": target,
        "reason": "Cached",
        "note": "cached",
        "type": "Normal",
        "action": "Cache",
        "reportingController": "imagecache.dev/operator",
        "reportingInstance": "op-1",
        "eventTime": "2025-01-01T00:00:00.000000Z",
    }
    created = await kube.client.create("events.k8s.io/v1/events", new, namespace="default")
    assert created["apiVersion"] == "events.k8s.io/v1" and created["note"] == "cached"
    found = await kube.client.events_for("default", "x")
    assert [(e["reason"], e["message"]) for e in found] == [
        ("Queued", "queued"),
        ("Cached", "cached"),
    ]
    assert await kube.client.events_for("default", "y") == []
    listed = await kube.client.list(
        "events.k8s.io/v1/events", namespace="default", field_selector="regarding.name=x"
    )
    assert [e["note"] for e in listed] == ["queued", "cached"]
