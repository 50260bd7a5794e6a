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
from urllib.parse import quote

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
    """`KubernetesWrites` over a kubernetes_asyncio ApiClient (the caller owns the client).

    Each write is one JSON request sent with the client's public ``request`` (its session, its
    credentials: a `RefreshingApiClient` reloads them on 401): the body is a plain dict and the
    answer plain JSON, without the generated API layer's models and serialisation, which cost
    more CPU than the HTTP request itself at fleet scale.
    """

    def __init__(
        self, api: k8s.ApiClient, *, timeout: float, gate: WriteGate | None = None
    ) -> None:
        self._api = api
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

    async def _send(
        self, method: str, path: str, body: dict[str, Any], *, content_type: str, what: str
    ) -> dict[str, Any]:
        """One write; the object the API answered with. `WriteFailed` unless 2xx JSON."""
        timeout = self._write_timeout(what)
        configuration = self._api.configuration
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": str(self._api.user_agent),
        }
        bearer = (await configuration.auth_settings()).get("BearerToken")
        if bearer and bearer.get("value"):
            headers[str(bearer["key"])] = str(bearer["value"])
        try:
            response = await self._api.request(
                method,
                f"{configuration.host}{path}",
                headers=headers,
                body=body,
                _preload_content=False,
                _request_timeout=timeout,
            )
            answer = json.loads(await _answer(response, what))
        except ApiException as error:
            raise WriteFailed(
                f"{what}: {error.status} {error.reason}", status=error.status
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise WriteFailed(f"{what}: {error!r}") from error
        if not isinstance(answer, dict):
            raise WriteFailed(f"{what}: the API answered with no object")
        return answer

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        # A merge patch (the client would pick a strategic merge patch, which CRDs refuse).
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{_segment(namespace)}/{PLURAL}/{_segment(name)}"
        return await self._send(
            "PATCH",
            f"{path}/status",
            {"status": patch},
            content_type="application/merge-patch+json",
            what=f"status patch of {namespace}/{name}",
        )

    async def post_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> str:
        now = _timestamp()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = await self._send(
            "POST",
            f"/api/v1/namespaces/{_segment(ref.namespace)}/events",
            event,
            content_type="application/json",
            what=f"event {reason} on {ref.namespace}/{ref.name}",
        )
        return str((created.get("metadata") or {}).get("name") or "")

    async def patch_event(self, namespace: str, name: str, *, count: int) -> None:
        await self._send(
            "PATCH",
            f"/api/v1/namespaces/{_segment(namespace)}/events/{_segment(name)}",
            {"count": count, "lastTimestamp": _timestamp()},
            content_type="application/merge-patch+json",
            what=f"event {namespace}/{name}",
        )


def _timestamp() -> str:
    """Now, as the API's timestamps are written (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _segment(value: str) -> str:
    """One path segment, every reserved character escaped."""
    return quote(value, safe="")
