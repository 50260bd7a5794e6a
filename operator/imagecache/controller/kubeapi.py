"""The operator's own writes to the Kubernetes API: one port, backed by kubernetes_asyncio.

kopf watches (indexes) and owns the evict-on-delete finalizer; everything else the operator
writes goes through `KubernetesWrites`: the status merge patch of an ImageCacheRequest and the
events posted on it. `ApiWrites` implements it on the operator's one ApiClient
(`controller.kubeclient`: the same login as kopf's, refreshing credentials); leader election
uses the same ApiClient.

Every write first asks its `WriteGate` (the leader elector: how long this process may still
write); none is sent once leadership ran out, and none may take longer than what is left of it.

Any failure of a write is raised as `WriteFailed` (HTTP status when there is one); the caller
logs it, counts it and tries again on a later tick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from imagecache.controller.errors import ControllerError

GROUP = "imagecache.dev"
VERSION = "v1alpha1"
PLURAL = "imagecacherequests"
KIND = "ImageCacheRequest"
COMPONENT = "imagecache-operator"


class WriteFailed(ControllerError):
    """A status patch or an event could not be written (retried on a later tick)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ObjectRef:
    """The object an event is about."""

    namespace: str
    name: str
    uid: str


class KubernetesWrites(Protocol):
    """Everything the operator writes besides kopf's finalizer."""

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` of one ImageCacheRequest; the object as written."""
        ...

    async def post_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> str:
        """Create one event on the request; the Event's name."""
        ...

    async def patch_event(self, namespace: str, name: str, *, count: int) -> None:
        """Raise an existing Event's ``count`` (a repeat, see `core.correlation`)."""
        ...


async def _answer(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The body of a raw answer (``_preload_content=False``); `WriteFailed` unless 2xx."""
    try:
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise WriteFailed(f"{what}: {response.status} {response.reason}", status=response.status)
    return body


class WriteGate(Protocol):
    """Whether this process may write now (`imagecache.controller.leader.LeaderElector`)."""

    def write_budget(self) -> float:
        """Seconds this process may still write (<= 0: not at all)."""
        ...


class ApiWrites:
    """`KubernetesWrites` over a kubernetes_asyncio ApiClient (the caller owns the client)."""

    def __init__(
        self, api: k8s.ApiClient, *, timeout: float, gate: WriteGate | None = None
    ) -> None:
        self._objects = k8s.CustomObjectsApi(api)
        self._core = k8s.CoreV1Api(api)
        self._timeout = timeout
        self._gate = gate

    def _write_timeout(self, what: str) -> float:
        """The timeout of one write: `WriteFailed` when the gate says no more writes."""
        if self._gate is None:
            return self._timeout
        budget = self._gate.write_budget()
        if budget <= 0:
            raise WriteFailed(f"{what}: not leading (no write after the renew deadline)")
        return min(self._timeout, budget)

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        timeout = self._write_timeout(f"status patch of {namespace}/{name}")
        try:
            # A merge patch (the client would pick a strategic merge patch, which CRDs refuse).
            # The answer is read as plain JSON: no model objects to build for each write.
            options: dict[str, Any] = {
                "_content_type": "application/merge-patch+json",
                "_request_timeout": timeout,
                "_preload_content": False,
            }
            response = await self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, **options
            )
            answer = await _answer(response, f"status patch of {namespace}/{name}")
            written = json.loads(answer)
        except ApiException as error:
            raise WriteFailed(
                f"status patch of {namespace}/{name}: {error.status} {error.reason}",
                status=error.status,
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise WriteFailed(f"status patch of {namespace}/{name}: {error!r}") from error
        return dict(written)

    async def post_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> str:
        now = datetime.now(UTC)
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ref.namespace),
            involved_object=k8s.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=KIND,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            type=type,
            reason=reason,
            message=message[:1024],
            source=k8s.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        timeout = self._write_timeout(f"event {reason} on {ref.namespace}/{ref.name}")
        options: dict[str, Any] = {"_request_timeout": timeout, "_preload_content": False}
        try:
            # A raw answer (the client's declared return type assumes preloaded content).
            response: Any = await self._core.create_namespaced_event(
                ref.namespace, event, **options
            )
            created = await _answer(response, f"event {reason} on {ref.namespace}/{ref.name}")
            return str((json.loads(created).get("metadata") or {}).get("name") or "")
        except ApiException as error:
            raise WriteFailed(
                f"event {reason} on {ref.namespace}/{ref.name}: {error.status} {error.reason}",
                status=error.status,
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise WriteFailed(f"event {reason} on {ref.namespace}/{ref.name}: {error!r}") from error

    async def patch_event(self, namespace: str, name: str, *, count: int) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"count": count, "lastTimestamp": now}
        options: dict[str, Any] = {
            "_content_type": "application/merge-patch+json",
            "_request_timeout": self._write_timeout(f"event {namespace}/{name}"),
            "_preload_content": False,
        }
        try:
            response: Any = await self._core.patch_namespaced_event(
                name, namespace, body, **options
            )
            await _answer(response, f"event {namespace}/{name}")
        except ApiException as error:
            raise WriteFailed(
                f"event {namespace}/{name}: {error.status} {error.reason}", status=error.status
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise WriteFailed(f"event {namespace}/{name}: {error!r}") from error
