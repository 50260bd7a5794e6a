"""The operator's one Kubernetes API client stack, with credentials that refresh (issue 14, item 7).

kopf (watches, finalizers) and this module's `RefreshingApiClient` (status writes, events, the
Lease, TokenRequests) use the same login function, so they talk to the same server as the same
user. What this module adds around kubernetes_asyncio:

* **refreshing credentials** (`ApiCredentials`): the login is run again when a watched
  credentials file changes (in-cluster: the projected service-account token the kubelet rotates;
  else the kubeconfig), at most every `CHECK_PERIOD` seconds, and at least every
  `RELOGIN_PERIOD` seconds whatever the files say; a request answered 401 reloads the
  credentials once and is sent once more with the new ones;
* **no key material on disk** (`MemoryFiles`): certificate and key *data* of a kubeconfig are
  put in anonymous memory files (``memfd_create``) and the login's answer points at
  ``/proc/self/fd/N`` instead, for this client and for kopf alike (kopf would otherwise write
  them to a temporary file while it builds its SSL context); nothing is written under /tmp;
* **no proxy from the environment**: the HTTP session is built with ``trust_env=False``
  (kubernetes_asyncio's own uses ``True``), with the SSL context built here.

Errors: `NoCredentials` (a `ControllerError`) when the login gives nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from imagecache.controller.errors import ControllerError

logger = logging.getLogger("imagecache.controller.kubeclient")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CHECK_PERIOD = 1.0
"""Seconds between two looks at the credentials files' stat."""
RELOGIN_PERIOD = 60.0
"""Seconds after which the login runs again even if no file changed (kubernetes_asyncio's)."""
USER_AGENT = "imagecache-operator"

LoginCall = Callable[[], kopf.ConnectionInfo | None]


class NoCredentials(ControllerError):
    """Neither the service account nor a kubeconfig gave a way to the API server."""


def credential_files(environ: dict[str, str] | None = None) -> list[Path]:
    """The files the default login reads: the in-cluster token, else the kubeconfig(s)."""
    env = dict(os.environ if environ is None else environ)
    token = SERVICE_ACCOUNT / "token"
    if env.get("KUBERNETES_SERVICE_HOST") and token.exists():
        return [token]
    paths = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return [Path(p) for p in paths.split(os.pathsep) if p]


def _pem(data: str | bytes) -> bytes:
    """PEM bytes from raw PEM or base64 of it (as kubeconfigs hold it)."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if b"-----BEGIN" in raw else base64.b64decode(raw)


class MemoryFiles:
    """Anonymous in-memory files (``memfd_create``) by content; `close` frees them all."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def path_of(self, data: bytes) -> str:
        """A path (``/proc/self/fd/N``) that reads back `data`; one file per distinct content."""
        key = hashlib.sha256(data).hexdigest()
        fd = self._fds.get(key)
        if fd is None:
            if not hasattr(os, "memfd_create"):
                raise NoCredentials(
                    "client certificate data in a kubeconfig needs memfd_create (Linux) to stay "
                    "off the disk: give client-certificate/client-key paths instead"
                )
            fd = os.memfd_create("imagecache-credential", os.MFD_CLOEXEC)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._fds[key] = fd
        return f"/proc/self/fd/{fd}"

    def in_memory(self, info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
        """`info` with certificate, key and CA *data* replaced by paths to memory files."""
        changes: dict[str, Any] = {}
        for data_field, path_field in (
            ("ca_data", "ca_path"),
            ("certificate_data", "certificate_path"),
            ("private_key_data", "private_key_path"),
        ):
            data = getattr(info, data_field)
            if data:
                changes[data_field] = None
                changes[path_field] = self.path_of(_pem(data))
        return dataclasses.replace(info, **changes) if changes else info

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    """The SSL context for `info` (paths only: see `MemoryFiles.in_memory`)."""
    ca = os.fsdecode(info.ca_path) if info.ca_path else None
    context = ssl.create_default_context(cafile=ca)
    if info.certificate_path:
        key = os.fsdecode(info.private_key_path) if info.private_key_path else None
        context.load_cert_chain(os.fsdecode(info.certificate_path), keyfile=key)
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ApiCredentials:
    """The login's current answer, run again when its files change, periodically, or on 401."""

    def __init__(
        self,
        login: LoginCall,
        *,
        files: Iterable[Path] = (),
        memory: MemoryFiles | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._files = list(files)
        self._memory = memory or MemoryFiles()
        self._clock = clock
        self.reloads = 0
        """How many times the login ran again after the first."""
        self.info = self._run_login()
        self._loaded_at = self._checked_at = clock()
        self._stamps = self._stat()

    def _run_login(self) -> kopf.ConnectionInfo:
        info = self._login()
        if info is None:
            raise NoCredentials("no in-cluster service account and no kubeconfig")
        return self._memory.in_memory(info)

    def _stat(self) -> list[tuple[int, int, int] | None]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._files:
            try:
                info = os.stat(path)
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                stamps.append(None)
        return stamps

    def reload(self) -> bool:
        """Run the login again; True when the credentials changed."""
        before = self.header()
        try:
            self.info = self._run_login()
        except Exception as error:  # a login that fails now keeps the last credentials
            logger.warning("re-login failed, keeping the current credentials: %r", error)
            return False
        finally:
            self._loaded_at = self._clock()
            self._stamps = self._stat()
        self.reloads += 1
        changed = self.header() != before
        if changed:
            logger.info("API credentials reloaded")
        return changed

    def refresh_if_due(self) -> None:
        """Reload when a credentials file changed or `RELOGIN_PERIOD` passed (cheap otherwise)."""
        now = self._clock()
        if now - self._loaded_at >= RELOGIN_PERIOD:
            self.reload()
            return
        if now - self._checked_at < CHECK_PERIOD:
            return
        self._checked_at = now
        if self._stat() != self._stamps:
            self.reload()

    def header(self) -> str | None:
        """The ``Authorization`` header value now (None without one)."""
        value = self.info.as_http_headers().get("Authorization")
        return str(value) if value else None

    def apply(self, configuration: k8s.Configuration) -> None:
        """Put the current token (or basic credentials) into `configuration`."""
        info = self.info
        configuration.username = info.username
        configuration.password = info.password
        if info.token:
            configuration.api_key = {"BearerToken": info.token}
            configuration.api_key_prefix = {"BearerToken": info.scheme or "Bearer"}
        else:
            configuration.api_key = {}


class RefreshingApiClient(k8s.ApiClient):
    """A kubernetes_asyncio ApiClient whose credentials follow `ApiCredentials`.

    Build it with `open_api_client` (it swaps in a session without proxy variables).
    """

    def __init__(self, credentials: ApiCredentials) -> None:
        info = credentials.info
        configuration = k8s.Configuration(host=info.server)
        credentials.apply(configuration)

        def refresh(config: k8s.Configuration) -> None:
            credentials.refresh_if_due()
            credentials.apply(config)

        configuration.refresh_api_key_hook = refresh
        if info.proxy_url:
            configuration.proxy = info.proxy_url
        super().__init__(configuration=configuration)
        self.credentials = credentials
        self.user_agent = USER_AGENT

    async def request(  # the generated client's signature, as a coroutine
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        """Send once; on 401, reload the credentials and, if they changed, send once more."""

        async def send(headers: dict[str, str] | None) -> Any:
            return await super(RefreshingApiClient, self).request(
                method,
                url,
                query_params=query_params,
                headers=headers,
                post_params=post_params,
                body=body,
                _preload_content=_preload_content,
                _request_timeout=_request_timeout,
            )

        try:
            response = await send(dict(headers or {}))
        except ApiException as error:
            if error.status != 401 or not self.credentials.reload():
                raise
        else:
            if getattr(response, "status", None) != 401 or not self.credentials.reload():
                return response
            response.release()
        retried = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        fresh = self.credentials.header()
        if fresh:
            retried["Authorization"] = fresh
        self.credentials.apply(self.configuration)
        return await send(retried)


async def open_api_client(credentials: ApiCredentials) -> RefreshingApiClient:
    """The client, its HTTP session replaced by one that ignores proxy variables
    (``trust_env=False``) and verifies with `ssl_context`. Close it (``async with``)."""
    api = RefreshingApiClient(credentials)
    rest = api.rest_client
    generated = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=api.configuration.connection_pool_maxsize,
            ssl=ssl_context(credentials.info),
        ),
        trust_env=False,
        read_bufsize=2**21,  # as kubernetes_asyncio: big objects in one read
    )
    await generated.close()
    return api
