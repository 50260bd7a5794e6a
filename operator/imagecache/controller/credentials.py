"""What the operator sends an agent to prove who it is: one port, two implementations.

`AgentCredentials.headers_for` answers the headers for one target agent (its endpoint and pod
UID); `peer_headers_for` the headers another agent presents to that one to read a cached image
from it (fleet fill: sent to the target along with the peer's URL). Two ways, chosen by the
``agent_auth`` setting:

* `TokenFileCredentials` (``token-file``): the token of ``agent_token_file`` (re-read when the
  file changes) for every agent -- a standalone or test set-up, where every agent shares it;
* `PodTokenCredentials` (``kubernetes``): for each pod a short-lived token of the operator's own
  service account, from the TokenRequest API, with the audience ``imagecache.dev/agent/<uid>``
  (`core.podtokens`). The agent of that pod accepts it after a TokenReview; no other agent does,
  nor the API server. A peer token has the audience ``imagecache.dev/peer/<uid>``, which that
  agent accepts for peer reads only. Tokens are cached per audience until 80 % of their life
  has passed, in a bounded LRU (`MAX_CACHED`); concurrent calls for one audience share one
  TokenRequest; each call has a timeout; a failure is a `CredentialUnavailable` for that
  target (the reconciler shows it as its reason and retries with backoff), never an exception
  out of the loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from imagecache.controller.errors import CredentialUnavailable
from imagecache.core.podtokens import agent_audience, peer_audience, refresh_due

MAX_CACHED = 10_000
"""Pod tokens kept at most (one per target pod); the least recently used go first."""
MAX_TOKEN_LENGTH = 8 * 1024
MAX_ANSWER_BYTES = 64 * 1024
TOKEN_REQUEST_TIMEOUT = 10.0


async def _bounded_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `ValueError` once it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise ValueError(f"answer larger than {limit} bytes")
    return bytes(body)


class AgentCredentials(Protocol):
    """The credential headers sent to one agent."""

    async def headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        """Headers for the agent of pod `pod_uid` at `endpoint`; `CredentialUnavailable`."""
        ...

    async def peer_headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        """Headers that let another agent read cached images from this one (fleet fill)."""
        ...


class TokenFile:
    """A token read from a file, re-read when the file's mtime, size or inode changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def current(self) -> str | None:
        """The first non-empty line of the file (None without a file or when it is missing)."""
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError:
            self._stamp, self._token = None, None
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._stamp:
            text = self._path.read_text(encoding="utf-8", errors="replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            self._token = lines[0] if lines else None
            self._stamp = stamp
        return self._token


def _audience(kind: Callable[[str], str], pod_uid: str | None, endpoint: str) -> str:
    """The audience `kind(pod_uid)`, or `CredentialUnavailable` without a usable pod UID."""
    if not pod_uid:
        raise CredentialUnavailable(
            "no pod UID for this agent: no per-pod token", endpoint=endpoint
        )
    try:
        return kind(pod_uid)
    except ValueError as error:
        raise CredentialUnavailable(str(error), endpoint=endpoint) from error


class TokenFileCredentials:
    """``agent_auth = token-file``: the one shared token for every agent."""

    def __init__(self, token: TokenFile) -> None:
        self._token = token

    async def headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        token = self._token.current()
        return {"X-Auth-Token": token} if token else {}

    async def peer_headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        return await self.headers_for(endpoint=endpoint, pod_uid=pod_uid)  # shared anyway


@dataclass(frozen=True)
class _PodToken:
    token: str
    issued_at: float  # epoch seconds
    expires_at: float


class PodTokenCredentials:
    """``agent_auth = kubernetes``: a TokenRequest-minted token per target pod (module doc)."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        namespace: str,
        service_account: str,
        seconds: int,
        clock: Callable[[], float] = time.time,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._core = k8s.CoreV1Api(api)
        self._namespace = namespace
        self._service_account = service_account
        self._seconds = seconds
        self._clock = clock
        self._max_cached = max_cached
        self._tokens: OrderedDict[str, _PodToken] = OrderedDict()
        self._pending: dict[str, asyncio.Future[_PodToken]] = {}
        self.requests = 0
        """TokenRequests sent so far."""

    def __len__(self) -> int:
        return len(self._tokens)

    async def headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        token = await self._token_for(_audience(agent_audience, pod_uid, endpoint), endpoint)
        return {"X-Auth-Token": token.token}

    async def peer_headers_for(self, *, endpoint: str, pod_uid: str | None) -> dict[str, str]:
        token = await self._token_for(_audience(peer_audience, pod_uid, endpoint), endpoint)
        return {"X-Auth-Token": token.token}

    async def _token_for(self, audience: str, endpoint: str) -> _PodToken:
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is not None and not refresh_due(
            issued_at=cached.issued_at, expires_at=cached.expires_at, now=now
        ):
            self._tokens.move_to_end(audience)
            return cached
        pending = self._pending.get(audience)
        if pending is None:
            pending = asyncio.ensure_future(self._request(audience, endpoint))
            self._pending[audience] = pending
            pending.add_done_callback(lambda _: self._pending.pop(audience, None))
        token = await asyncio.shield(pending)
        self._tokens[audience] = token
        self._tokens.move_to_end(audience)
        while len(self._tokens) > self._max_cached:
            self._tokens.popitem(last=False)
        return token

    async def _request(self, audience: str, endpoint: str) -> _PodToken:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": self._seconds},
        }
        what = f"TokenRequest for {self._namespace}/{self._service_account}"
        self.requests += 1
        issued_at = self._clock()
        try:
            options: dict[str, Any] = {
                "_request_timeout": TOKEN_REQUEST_TIMEOUT,
                "_preload_content": False,
            }
            response: Any = await self._core.create_namespaced_service_account_token(
                self._service_account,
                self._namespace,
                body,  # type: ignore[arg-type]  # a dict is sent as is
                **options,
            )
            try:
                raw = await _bounded_body(response, MAX_ANSWER_BYTES)
            finally:
                response.release()
            if response.status not in (200, 201):
                raise CredentialUnavailable(
                    f"{what}: {response.status} {response.reason}",
                    endpoint=endpoint,
                    status=response.status,
                )
            status = json.loads(raw).get("status") or {}
        except ApiException as error:
            raise CredentialUnavailable(
                f"{what}: {error.status} {error.reason}", endpoint=endpoint, status=error.status
            ) from error
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AttributeError) as error:
            raise CredentialUnavailable(f"{what}: {error!r}", endpoint=endpoint) from error
        token, expiry = status.get("token"), status.get("expirationTimestamp")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise CredentialUnavailable(f"{what}: no usable token in the answer", endpoint=endpoint)
        try:
            expires_at = datetime.fromisoformat(str(expiry).replace("Z", "+00:00")).timestamp()
        except ValueError as error:
            raise CredentialUnavailable(
                f"{what}: bad expirationTimestamp", endpoint=endpoint
            ) from (error)
        return _PodToken(token=token, issued_at=issued_at, expires_at=expires_at)
