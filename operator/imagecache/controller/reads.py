"""The operator's own reads of the Kubernetes API: one port, backed by kubernetes_asyncio.

kopf's watches feed the loop; these reads are how the loop checks that what the watch showed is
still true: `get_request` before re-queueing an image (a request deleted while the watch was
down must not get its image back), and the periodic resync's full lists (`list_requests`,
`list_pods`) that forget objects deleted during a watch gap. Answers are read as plain JSON (no
model objects for thousands of items). A 404 is an answer (`None`: gone); any other failure
is `ReadFailed`, and the caller tries again later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from imagecache.controller.errors import ControllerError
from imagecache.controller.kubeapi import GROUP, PLURAL, VERSION


class ReadFailed(ControllerError):
    """A read of the API failed (not a 404); tried again later."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Listing:
    """The items of a full list and the list's resourceVersion."""

    items: list[dict[str, Any]]
    resource_version: str


class KubernetesReads(Protocol):
    """What the loop reads from the API besides kopf's watches."""

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ImageCacheRequest, or None when it does not exist (404)."""
        ...

    async def list_requests(self, namespace: str | None) -> Listing:
        """Every ImageCacheRequest (of one namespace, or all with None)."""
        ...

    async def list_pods(self, namespace: str | None) -> Listing:
        """Every pod (of one namespace, or all with None)."""
        ...


async def _json(response: aiohttp.ClientResponse, what: str) -> Any:
    try:
        body = await response.read()
    finally:
        response.release()
    if response.status == 404:
        return None
    if not 200 <= response.status <= 299:
        raise ReadFailed(f"{what}: {response.status} {response.reason}", status=response.status)
    return json.loads(body)


class ApiReads:
    """`KubernetesReads` over a kubernetes_asyncio ApiClient (the caller owns the client)."""

    def __init__(self, api: k8s.ApiClient, *, timeout: float) -> None:
        self._objects = k8s.CustomObjectsApi(api)
        self._core = k8s.CoreV1Api(api)
        self._timeout = timeout

    def _options(self) -> dict[str, Any]:
        return {"_request_timeout": self._timeout, "_preload_content": False}

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"get {namespace}/{name}"
        try:
            response = await self._objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, **self._options()
            )
            body = await _json(response, what)
        except ApiException as error:
            if error.status == 404:
                return None
            raise ReadFailed(
                f"{what}: {error.status} {error.reason}", status=error.status
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise ReadFailed(f"{what}: {error!r}") from error
        return dict(body) if isinstance(body, dict) else None

    async def list_requests(self, namespace: str | None) -> Listing:
        if namespace is None:
            call = self._objects.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, **self._options()
            )
        else:
            call = self._objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **self._options()
            )
        return await self._list(call, f"list {PLURAL}")

    async def list_pods(self, namespace: str | None) -> Listing:
        if namespace is None:
            call = self._core.list_pod_for_all_namespaces(**self._options())
        else:
            call = self._core.list_namespaced_pod(namespace, **self._options())
        return await self._list(call, "list pods")

    async def _list(self, call: Any, what: str) -> Listing:
        try:
            body = await _json(await call, what)
        except ApiException as error:
            raise ReadFailed(
                f"{what}: {error.status} {error.reason}", status=error.status
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise ReadFailed(f"{what}: {error!r}") from error
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ReadFailed(f"{what}: not a list")
        meta = body.get("metadata") or {}
        return Listing(items=body["items"], resource_version=str(meta.get("resourceVersion") or ""))


def scopes(namespaces: Sequence[str]) -> list[str | None]:
    """What to list: each watched namespace, or the whole cluster (None)."""
    return list(namespaces) if namespaces else [None]
