"""The operator's own writes to the Kubernetes API: one port, backed by kubernetes_asyncio.

kopf watches (indexes) and owns the evict-on-delete finalizer; everything else the operator
writes goes through `KubernetesWrites`: the status merge patch of an ImageCacheRequest and the
events posted on it. `ApiWrites` implements it on a `kubernetes_asyncio` ApiClient built by
`api_client_from` from the same `kopf.ConnectionInfo` kopf logs in with (so a test pointing kopf
at the emulator points these writes there too); leader election uses the same ApiClient.

Any failure of a write is raised as `WriteFailed` (HTTP status when there is one); the caller
logs it, counts it and tries again on a later tick.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import kopf
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


def _as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pem_file(data: str | bytes, name: str) -> str:
    """Write PEM data (raw or base64, as kubeconfigs hold it) to a private file; its path."""
    text = _as_text(data)
    if "-----BEGIN" not in text:
        text = base64.b64decode(text).decode()
    path = os.path.join(tempfile.mkdtemp(prefix="imagecache-kube-"), name)
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)
    return path


def api_client_from(info: kopf.ConnectionInfo) -> k8s.ApiClient:
    """A kubernetes_asyncio ApiClient talking to the server kopf logged in to, as kopf does."""
    config = k8s.Configuration(host=info.server)
    if info.token:
        config.api_key = {"BearerToken": info.token}  # the name kubernetes_asyncio reads
        config.api_key_prefix = {"BearerToken": info.scheme or "Bearer"}
    if info.username is not None:
        config.username = info.username
        config.password = info.password
    if info.ca_path:
        config.ssl_ca_cert = os.fsdecode(info.ca_path)
    elif info.ca_data:
        config.ssl_ca_cert = _pem_file(info.ca_data, "ca.crt")
    if info.certificate_path:
        config.cert_file = os.fsdecode(info.certificate_path)
    elif info.certificate_data:
        config.cert_file = _pem_file(info.certificate_data, "tls.crt")
    if info.private_key_path:
        config.key_file = os.fsdecode(info.private_key_path)
    elif info.private_key_data:
        config.key_file = _pem_file(info.private_key_data, "tls.key")
    if info.insecure:
        config.verify_ssl = False
    if info.proxy_url:
        config.proxy = info.proxy_url
    return k8s.ApiClient(configuration=config)


async def _answer(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The body of a raw answer (``_preload_content=False``); `WriteFailed` unless 2xx."""
    try:
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise WriteFailed(f"{what}: {response.status} {response.reason}", status=response.status)
    return body


class ApiWrites:
    """`KubernetesWrites` over a kubernetes_asyncio ApiClient (the caller owns the client)."""

    def __init__(self, api: k8s.ApiClient, *, timeout: float) -> None:
        self._objects = k8s.CustomObjectsApi(api)
        self._core = k8s.CoreV1Api(api)
        self._timeout = timeout

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            # A merge patch (the client would pick a strategic merge patch, which CRDs refuse).
            # The answer is read as plain JSON: no model objects to build for each write.
            options: dict[str, Any] = {
                "_content_type": "application/merge-patch+json",
                "_request_timeout": self._timeout,
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
        options: dict[str, Any] = {"_request_timeout": self._timeout, "_preload_content": False}
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
            "_request_timeout": self._timeout,
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
