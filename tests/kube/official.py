"""Shortcuts over the official ``kubernetes`` client for the emulator's own tests.

The tests drive the emulator with the official client so its wire format is checked against a
real client's; these helpers only save repeating group/version/plural and the kubelet-like
two-step pod creation. `status_of` reads the Kubernetes ``Status`` out of an `ApiException`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1Pod
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "imagecache.dev", "v1alpha1", "imagecacherequests"
NS = "default"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def status_of(error: ApiException) -> dict[str, Any]:
    """The ``Status`` object the server answered with."""
    body: dict[str, Any] = json.loads(error.body)
    return body


def icr(name: str, **spec: Any) -> dict[str, Any]:
    """An ImageCacheRequest manifest (single-pod form by default)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageCacheRequest",
        "metadata": {"name": name},
        "spec": {"image": "img-1", "pod": "pod-0", **spec},
    }


def create_icr(api: ApiClient, body: Mapping[str, Any], namespace: str = NS) -> dict[str, Any]:
    created: dict[str, Any] = CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, dict(body)
    )
    return created


def get_icr(api: ApiClient, name: str, namespace: str = NS) -> dict[str, Any] | None:
    """The object, or None on 404."""
    try:
        got: dict[str, Any] = CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return got


def list_icrs(api: ApiClient, namespace: str | None = None) -> list[dict[str, Any]]:
    objects = CustomObjectsApi(api)
    listing = (
        objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        if namespace is None
        else objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    )
    return list(listing["items"])


def patch_icr(
    api: ApiClient,
    name: str,
    patch: Any,
    *,
    status: bool = False,
    content_type: str = MERGE,
    namespace: str = NS,
) -> dict[str, Any]:
    """PATCH the object (or its ``status`` subresource) with the given patch type."""
    objects = CustomObjectsApi(api)
    method = (
        objects.patch_namespaced_custom_object_status
        if status
        else objects.patch_namespaced_custom_object
    )
    patched: dict[str, Any] = method(
        GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=content_type
    )
    return patched


def replace_icr(api: ApiClient, body: Mapping[str, Any], namespace: str = NS) -> dict[str, Any]:
    """PUT the whole object (its ``metadata.resourceVersion`` is the precondition)."""
    replaced: dict[str, Any] = CustomObjectsApi(api).replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"], dict(body)
    )
    return replaced


def delete_icr(api: ApiClient, name: str, namespace: str = NS) -> dict[str, Any] | None:
    """DELETE; what the server answered, or None when it was already gone (404)."""
    try:
        gone: dict[str, Any] = CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return gone


def create_pod(
    api: ApiClient,
    name: str,
    *,
    ip: str | None,
    labels: Mapping[str, str] | None = None,
    phase: str = "Running",
    namespace: str = NS,
) -> V1Pod:
    """Create a Pod, then write its status through ``pods/status`` as a kubelet would."""
    core = CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "main", "image": "registry.invalid/agent:test"}],
            },
        },
    )
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    ready = phase == "Running" and ip is not None
    status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    pod: V1Pod = core.patch_namespaced_pod_status(name, namespace, {"status": status})
    return pod
