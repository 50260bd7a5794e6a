"""A small async Kubernetes client for tests (aiohttp), speaking to the emulator or any API server.

It owns nothing but one `aiohttp.ClientSession` bound to the caller's event loop. Resources are
named the way kubectl's URLs name them: ``"pods"`` (core v1) or ``"imagecache.dev/v1alpha1/
imagecacherequests"`` (``group/version/plural``). Errors (any status >= 400 except the 404 of
`get`) raise `ApiError` carrying the Kubernetes ``Status`` object the server answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

JsonObject = dict[str, Any]
PatchType = Literal["merge", "json", "strategic"]

ICR = "imagecache.dev/v1alpha1/imagecacherequests"
"""The ImageCacheRequest resource, as `KubeClient` methods take it."""

_CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code, `body` its Status object."""

    def __init__(self, status: int, body: JsonObject) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        """The Status reason, e.g. ``Invalid``, ``Conflict``, ``NotFound``."""
        return str(self.body.get("reason", ""))

    @property
    def message(self) -> str:
        """The Status message, worded like the real API server's."""
        return str(self.body.get("message", ""))


def resource_path(resource: str, namespace: str | None = None, name: str | None = None) -> str:
    """The URL path of a collection or an object: ``/api/v1/namespaces/ns/pods/name``."""
    parts = resource.split("/")
    if len(parts) == 1:
        base, plural = "/api/v1", parts[0]
    elif len(parts) == 2:
        base, plural = f"/api/{parts[0]}", parts[1]
    else:
        base, plural = f"/apis/{parts[0]}/{parts[1]}", parts[2]
    path = base
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{name}"
    return path


class KubeClient:
    """Create, read, patch and delete objects over HTTP; one session, closed by `close()`."""

    def __init__(self, url: str, *, token: str = "test-token") -> None:
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """Send one request; answer (status, decoded JSON body) without raising."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self._session.request(
            method, self.url + path, data=data, params=params, headers=headers
        ) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = {"message": text}
            return response.status, payload

    async def _checked(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        return _object_or_error(*await self.request(method, path, **kwargs))

    async def _found(self, method: str, path: str) -> JsonObject | None:
        """Like `_checked`, but None when the object does not exist (404)."""
        status, payload = await self.request(method, path)
        return None if status == 404 else _object_or_error(status, payload)

    async def create(
        self, resource: str, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> JsonObject:
        """POST a new object; the namespace defaults to the body's ``metadata.namespace``."""
        ns = namespace if namespace is not None else body.get("metadata", {}).get("namespace")
        return await self._checked("POST", resource_path(resource, ns), body=dict(body))

    async def get(
        self, resource: str, name: str, *, namespace: str | None = None
    ) -> JsonObject | None:
        """GET one object, or None when it does not exist (404)."""
        return await self._found("GET", resource_path(resource, namespace, name))

    async def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JsonObject]:
        """LIST objects (all namespaces when `namespace` is None), optionally filtered."""
        params = {}
        if label_selector is not None:
            params["labelSelector"] = label_selector
        if field_selector is not None:
            params["fieldSelector"] = field_selector
        payload = await self._checked("GET", resource_path(resource, namespace), params=params)
        return list(payload.get("items", []))

    async def replace(
        self, resource: str, body: Mapping[str, Any], *, subresource: str | None = None
    ) -> JsonObject:
        """PUT a whole object (carry ``metadata.resourceVersion`` for optimistic concurrency)."""
        meta = body.get("metadata", {})
        path = resource_path(resource, meta.get("namespace"), meta["name"])
        if subresource:
            path += f"/{subresource}"
        return await self._checked("PUT", path, body=dict(body))

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
    ) -> JsonObject:
        """PATCH an object (merge patch by default; ``subresource="status"`` for the status)."""
        path = resource_path(resource, namespace, name)
        if subresource:
            path += f"/{subresource}"
        return await self._checked(
            "PATCH", path, body=patch, content_type=_CONTENT_TYPES[patch_type]
        )

    async def delete(
        self, resource: str, name: str, *, namespace: str | None = None
    ) -> JsonObject | None:
        """DELETE an object; answer what the server answered, or None when it was already gone."""
        return await self._found("DELETE", resource_path(resource, namespace, name))

    async def create_namespace(self, name: str) -> JsonObject:
        """Create a namespace (the emulator refuses objects in namespaces that do not exist)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        return await self.create("namespaces", body)

    async def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        ip: str | None,
        labels: Mapping[str, str] | None = None,
        phase: str = "Running",
        node_name: str = "node-1",
        annotations: Mapping[str, str] | None = None,
        ready: bool | None = None,
    ) -> JsonObject:
        """Create a Pod and set its status like a kubelet would (``podIP``, ``phase``, the
        ``Ready`` condition: by default True when Running with an IP).

        The API server drops ``status`` on create, so the status is written in a second step
        through the ``pods/status`` subresource, as the kubelet does. `ip=None` leaves the pod
        without an IP (e.g. Pending). Answer the pod as it is after both writes.
        """
        body: JsonObject = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "main", "image": "registry.invalid/agent:test"}],
            },
        }
        await self.create("pods", body, namespace=namespace)
        status: JsonObject = {"phase": phase}
        if ip is not None:
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
        if ready is None:
            ready = phase == "Running" and ip is not None
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        return await self.patch(
            "pods", name, {"status": status}, namespace=namespace, subresource="status"
        )

    async def replace_pod(
        self,
        namespace: str,
        name: str,
        *,
        ip: str | None,
        labels: Mapping[str, str] | None = None,
        phase: str = "Running",
        node_name: str = "node-1",
        annotations: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Delete the pod and create it again under the same name (a new uid, maybe a new IP)."""
        await self.delete("pods", name, namespace=namespace)
        return await self.create_pod(
            namespace,
            name,
            ip=ip,
            labels=labels,
            phase=phase,
            node_name=node_name,
            annotations=annotations,
        )

    async def events_for(self, namespace: str, name: str) -> list[JsonObject]:
        """Core v1 events whose ``involvedObject`` is the named object, oldest first."""
        items = await self.list(
            "events", namespace=namespace, field_selector=f"involvedObject.name={name}"
        )
        return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))


def _object_or_error(status: int, payload: Any) -> JsonObject:
    if status >= 400:
        raise ApiError(status, payload if isinstance(payload, dict) else {"message": payload})
    assert isinstance(payload, dict)
    return payload
