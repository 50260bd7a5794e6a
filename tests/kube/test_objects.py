"""Object bookkeeping like the real API server's, driven with the official ``kubernetes`` client.

Covers: uid, monotonic resourceVersion and 409 on a stale one (PUT and PATCH), no-op writes,
generation (spec only), creationTimestamp, namespace from the URL (400 on mismatch, 404 for a
missing namespace), the status subresource separated from the main resource, JSON patch,
strategic merge patch on core objects (415 on custom ones), the namespaces resource itself.
"""

from __future__ import annotations

import re

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.kube.official import (
    JSON_PATCH,
    STRATEGIC,
    create_icr,
    create_pod,
    get_icr,
    icr,
    list_icrs,
    patch_icr,
    replace_icr,
    status_of,
)


def test_create_sets_uid_rv_generation_timestamp(k8s: ApiClient) -> None:
    a = create_icr(k8s, icr("a"))
    b = create_icr(k8s, icr("b"))
    assert re.fullmatch(r"[0-9a-f-]{36}", a["metadata"]["uid"])
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert a["metadata"]["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["metadata"]["creationTimestamp"])
    assert a["metadata"]["namespace"] == "default"


def test_create_existing_name_is_409(k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    with pytest.raises(ApiException) as err:
        create_icr(k8s, icr("a"))
    status = status_of(err.value)
    assert err.value.status == 409 and status["reason"] == "AlreadyExists"
    assert status["message"] == 'imagecacherequests.imagecache.dev "a" already exists'


def test_stale_resource_version_conflicts(k8s: ApiClient) -> None:
    created = create_icr(k8s, icr("a"))
    stale = created["metadata"]["resourceVersion"]
    patch_icr(k8s, "a", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as err:
        patch_icr(k8s, "a", {"metadata": {"resourceVersion": stale, "labels": {"x": "2"}}})
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(err.value)["message"]
    replaced = {**created, "metadata": {**created["metadata"], "labels": {"x": "3"}}}
    with pytest.raises(ApiException) as err:
        replace_icr(k8s, replaced)
    assert err.value.status == 409
    current = get_icr(k8s, "a")
    assert current is not None and current["metadata"]["labels"] == {"x": "1"}
    fresh = {**current, "metadata": {**current["metadata"], "labels": {"x": "4"}}}
    updated = replace_icr(k8s, fresh)
    assert updated["metadata"]["labels"] == {"x": "4"}
    assert int(updated["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])


def test_noop_patch_keeps_resource_version(k8s: ApiClient) -> None:
    created = create_icr(k8s, icr("a"))
    same = patch_icr(k8s, "a", {"spec": {"image": "img-1"}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generation_bumps_on_spec_only(k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    obj = patch_icr(k8s, "a", {"metadata": {"annotations": {"k": "v"}}})
    assert obj["metadata"]["generation"] == 1
    obj = patch_icr(k8s, "a", {"status": {"phase": "Queued"}}, status=True)
    assert obj["metadata"]["generation"] == 1
    obj = patch_icr(k8s, "a", {"spec": {"port": 9393}})
    assert obj["metadata"]["generation"] == 2


def test_namespace_comes_from_the_url(k8s: ApiClient) -> None:
    CoreV1Api(k8s).create_namespace({"metadata": {"name": "other"}})
    body = icr("a")
    body["metadata"]["namespace"] = "default"
    with pytest.raises(ApiException) as err:
        create_icr(k8s, body, namespace="other")
    assert err.value.status == 400
    assert "does not match the namespace sent on the request" in status_of(err.value)["message"]
    created = create_icr(k8s, icr("a"), namespace="other")
    assert created["metadata"]["namespace"] == "other"
    assert get_icr(k8s, "a") is None
    assert [o["metadata"]["namespace"] for o in list_icrs(k8s)] == ["other"]


def test_missing_namespace_is_404(k8s: ApiClient) -> None:
    with pytest.raises(ApiException) as err:
        create_icr(k8s, icr("a"), namespace="nowhere")
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "nowhere" not found'


def test_namespaces_resource_is_served(k8s: ApiClient) -> None:
    core = CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": "other"}})
    assert [ns.metadata.name for ns in core.list_namespace().items] == ["default", "other"]
    assert core.read_namespace("other").status.phase == "Active"


def test_status_subresource_is_separate(k8s: ApiClient) -> None:
    body = icr("a")
    body["status"] = {"phase": "Cached"}
    created = create_icr(k8s, body)
    assert "status" not in created  # dropped on create
    obj = patch_icr(k8s, "a", {"status": {"phase": "Queued"}, "spec": {"port": 1}}, status=True)
    assert obj["status"] == {"phase": "Queued"} and "port" not in obj["spec"]
    obj = patch_icr(k8s, "a", {"status": {"phase": "Failed"}, "spec": {"port": 2}})
    assert obj["status"] == {"phase": "Queued"} and obj["spec"]["port"] == 2


def test_status_of_pods_is_written_through_the_subresource(k8s: ApiClient) -> None:
    pod = create_pod(k8s, "p", ip="127.0.0.2", labels={"app": "a"})
    assert pod.status.pod_ip == "127.0.0.2" and pod.status.phase == "Running"
    assert pod.spec.node_name == "node-1"
    CoreV1Api(k8s).delete_namespaced_pod("p", "default")
    again = create_pod(k8s, "p", ip="127.0.0.3")
    assert again.metadata.uid != pod.metadata.uid
    assert again.status.pod_ip == "127.0.0.3"


def test_json_patch(k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    ops = [
        {"op": "add", "path": "/metadata/labels", "value": {"a/b": "c"}},
        {"op": "add", "path": "/spec/port", "value": 80},
    ]
    obj = patch_icr(k8s, "a", ops, content_type=JSON_PATCH)
    assert obj["metadata"]["labels"] == {"a/b": "c"} and obj["spec"]["port"] == 80
    with pytest.raises(ApiException) as err:
        patch_icr(
            k8s, "a", [{"op": "test", "path": "/spec/port", "value": 81}], content_type=JSON_PATCH
        )
    assert err.value.status == 422


def test_strategic_merge_patch_on_core_objects_only(k8s: ApiClient) -> None:
    create_pod(k8s, "p", ip="127.0.0.2")
    patch = {"spec": {"containers": [{"name": "side", "image": "x"}]}}
    pod = CoreV1Api(k8s).patch_namespaced_pod("p", "default", patch, _content_type=STRATEGIC)
    assert [c.name for c in pod.spec.containers] == ["main", "side"]
    create_icr(k8s, icr("a"))
    with pytest.raises(ApiException) as err:
        patch_icr(k8s, "a", {"spec": {"port": 1}}, content_type=STRATEGIC)
    assert err.value.status == 415
