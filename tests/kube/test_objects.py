"""Object bookkeeping like the real API server's.

Covers: uid, monotonic resourceVersion and 409 on a stale one (PUT and PATCH), no-op writes,
generation (spec only), creationTimestamp, namespace from the URL (400 on mismatch, 404 for a
missing namespace), the status subresource separated from the main resource, JSON patch,
strategic merge patch on core objects (415 on custom ones), the namespaces resource itself.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.kube.client import ICR, ApiError
from tests.kube.emulator import Emulator


def icr(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "metadata": {"name": name},
        "spec": {"image": "img-1", "pod": "pod-0", **spec},
    }


async def test_create_sets_uid_rv_generation_timestamp(kube: Emulator) -> None:
    a = await kube.client.create(ICR, icr("a"), namespace="default")
    b = await kube.client.create(ICR, icr("b"), namespace="default")
    assert re.fullmatch(r"[0-9a-f-]{36}", a["metadata"]["uid"])
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert a["metadata"]["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["metadata"]["creationTimestamp"])
    assert a["metadata"]["namespace"] == "default"


async def test_create_existing_name_is_409(kube: Emulator) -> None:
    await kube.client.create(ICR, icr("a"), namespace="default")
    with pytest.raises(ApiError) as err:
        await kube.client.create(ICR, icr("a"), namespace="default")
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"
    assert err.value.message == 'imagecacherequests.imagecache.dev "a" already exists'


async def test_stale_resource_version_conflicts(kube: Emulator) -> None:
    created = await kube.client.create(ICR, icr("a"), namespace="default")
    stale = created["metadata"]["resourceVersion"]
    await kube.client.patch(ICR, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    with pytest.raises(ApiError) as err:
        await kube.client.patch(
            ICR,
            "a",
            {"metadata": {"resourceVersion": stale, "labels": {"x": "2"}}},
            namespace="default",
        )
    assert err.value.status == 409 and err.value.reason == "Conflict"
    assert "the object has been modified" in err.value.message
    replaced = {**created, "metadata": {**created["metadata"], "labels": {"x": "3"}}}
    with pytest.raises(ApiError) as err:
        await kube.client.replace(ICR, replaced)
    assert err.value.status == 409
    current = await kube.client.get(ICR, "a", namespace="default")
    assert current is not None and current["metadata"]["labels"] == {"x": "1"}
    fresh = {**current, "metadata": {**current["metadata"], "labels": {"x": "4"}}}
    updated = await kube.client.replace(ICR, fresh)
    assert updated["metadata"]["labels"] == {"x": "4"}
    assert int(updated["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])


async def test_noop_patch_keeps_resource_version(kube: Emulator) -> None:
    created = await kube.client.create(ICR, icr("a"), namespace="default")
    same = await kube.client.patch(ICR, "a", {"spec": {"image": "img-1"}}, namespace="default")
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_generation_bumps_on_spec_only(kube: Emulator) -> None:
    await kube.client.create(ICR, icr("a"), namespace="default")
    obj = await kube.client.patch(
        ICR, "a", {"metadata": {"annotations": {"k": "v"}}}, namespace="default"
    )
    assert obj["metadata"]["generation"] == 1
    obj = await kube.client.patch(
        ICR, "a", {"status": {"phase": "Queued"}}, namespace="default", subresource="status"
    )
    assert obj["metadata"]["generation"] == 1
    obj = await kube.client.patch(ICR, "a", {"spec": {"port": 9393}}, namespace="default")
    assert obj["metadata"]["generation"] == 2


async def test_namespace_comes_from_the_url(kube: Emulator) -> None:
    await kube.client.create_namespace("other")
    body = icr("a")
    body["metadata"]["namespace"] = "default"
    with pytest.raises(ApiError) as err:
        await kube.client.create(ICR, body, namespace="other")
    assert err.value.status == 400
    assert "does not match the namespace sent on the request" in err.value.message
    created = await kube.client.create(ICR, icr("a"), namespace="other")
    assert created["metadata"]["namespace"] == "other"
    assert await kube.client.get(ICR, "a", namespace="default") is None
    assert [o["metadata"]["namespace"] for o in await kube.client.list(ICR)] == ["other"]


async def test_missing_namespace_is_404(kube: Emulator) -> None:
    with pytest.raises(ApiError) as err:
        await kube.client.create(ICR, icr("a"), namespace="nowhere")
    assert err.value.status == 404 and err.value.message == 'namespaces "nowhere" not found'


async def test_namespaces_resource_is_served(kube: Emulator) -> None:
    await kube.client.create_namespace("other")
    names = [ns["metadata"]["name"] for ns in await kube.client.list("namespaces")]
    assert names == ["default", "other"]
    got = await kube.client.get("namespaces", "other")
    assert got is not None and got["status"]["phase"] == "Active"


async def test_status_subresource_is_separate(kube: Emulator) -> None:
    body = icr("a")
    body["status"] = {"phase": "Cached"}
    created = await kube.client.create(ICR, body, namespace="default")
    assert "status" not in created  # dropped on create
    obj = await kube.client.patch(
        ICR,
        "a",
        {"status": {"phase": "Queued"}, "spec": {"port": 1}},
        namespace="default",
        subresource="status",
    )
    assert obj["status"] == {"phase": "Queued"} and "port" not in obj["spec"]
    obj = await kube.client.patch(
        ICR, "a", {"status": {"phase": "Failed"}, "spec": {"port": 2}}, namespace="default"
    )
    assert obj["status"] == {"phase": "Queued"} and obj["spec"]["port"] == 2


async def test_status_of_pods_is_written_through_the_subresource(kube: Emulator) -> None:
    pod = await kube.client.create_pod("default", "p", ip="127.0.0.2", labels={"app": "a"})
    assert pod["status"]["podIP"] == "127.0.0.2" and pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "node-1"
    again = await kube.client.replace_pod("default", "p", ip="127.0.0.3")
    assert again["metadata"]["uid"] != pod["metadata"]["uid"]
    assert again["status"]["podIP"] == "127.0.0.3"


async def test_json_patch(kube: Emulator) -> None:
    await kube.client.create(ICR, icr("a"), namespace="default")
    ops = [
        {"op": "add", "path": "/metadata/labels", "value": {"a/b": "c"}},
        {"op": "add", "path": "/spec/port", "value": 80},
    ]
    obj = await kube.client.patch(ICR, "a", ops, namespace="default", patch_type="json")
    assert obj["metadata"]["labels"] == {"a/b": "c"} and obj["spec"]["port"] == 80
    with pytest.raises(ApiError) as err:
        await kube.client.patch(
            ICR,
            "a",
            [{"op": "test", "path": "/spec/port", "value": 81}],
            namespace="default",
            patch_type="json",
        )
    assert err.value.status == 422


async def test_strategic_merge_patch_on_core_objects_only(kube: Emulator) -> None:
    await kube.client.create_pod("default", "p", ip="127.0.0.2")
    patch = {"spec": {"containers": [{"name": "side", "image": "x"}]}}
    pod = await kube.client.patch("pods", "p", patch, namespace="default", patch_type="strategic")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["main", "side"]
    await kube.client.create(ICR, icr("a"), namespace="default")
    with pytest.raises(ApiError) as err:
        await kube.client.patch(
            ICR, "a", {"spec": {"port": 1}}, namespace="default", patch_type="strategic"
        )
    assert err.value.status == 415
