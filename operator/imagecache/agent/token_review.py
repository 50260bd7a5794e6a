"""``auth = kubernetes``: client tokens judged by the Kubernetes TokenReview API (issue 14, item 4).

The operator sends this agent a token of its own service account minted for the audience
``imagecache.dev/agent/<this pod's UID>`` (`imagecache.core.podtokens`). `TokenReviews.check`
accepts a token only after ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (asking for that
one audience) says it is authenticated, for exactly that audience, as the configured operator
service account (`core.podtokens.judge_review`). A token read off the wire by another pod names
another audience, so it works against no other agent; one meant for the API server does not
work here either.

Bounds: a token over `MAX_TOKEN_BYTES` is refused without asking; verdicts are kept by token
digest (never the token) in a bounded cache until the token's expiry, at most five minutes,
refusals ten seconds; concurrent checks of one token share one review; at most
`MAX_PENDING_REVIEWS` distinct tokens are being reviewed at once (more: `TokenReviewError`,
answered 503); every review has a timeout.

The agent's own way to the API (`ApiAccess`): the in-cluster service account (token re-read
when the file changes: the kubelet rotates it) or a kubeconfig (``kubeconfig`` setting, for
tests and out-of-cluster runs: server, CA, token or tokenFile; client certificates are not
supported). The HTTP client ignores proxy variables (``trust_env=False``).

Errors::

    TokenReviewError    the API server cannot be asked (unreachable, timeout, 401/403 to the
                        agent, an answer that is not a TokenReview)
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from imagecache.agent.keystone import Outcome, PendingChecks, Verdict, VerdictCache
from imagecache.agent.token_file import TokenFile
from imagecache.core.podtokens import MAX_TOKEN_BYTES, judge_review, token_expiry
from imagecache.http_bodies import BodyTooLarge, read_bounded

log = logging.getLogger("imagecache.agent.token_review")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
REVIEW_TIMEOUT = 5.0  # seconds for one TokenReview
MAX_PENDING_REVIEWS = 64
MAX_ANSWER_BYTES = 64 * 1024


class TokenReviewError(Exception):
    """The Kubernetes API could not be asked to review a token (the agent's side)."""


@dataclass(frozen=True)
class ApiAccess:
    """Where the Kubernetes API is and how this agent authenticates to it."""

    server: str
    ssl: ssl.SSLContext | bool
    token: Callable[[], Any]
    """An async callable answering the bearer token now (re-read when it changes)."""

    @classmethod
    def in_cluster(cls, root: Path = SERVICE_ACCOUNT) -> ApiAccess:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise TokenReviewError(
                "not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): give --kubeconfig"
            )
        if ":" in host:
            host = f"[{host}]"
        context = ssl.create_default_context(cafile=str(root / "ca.crt"))
        return cls(f"https://{host}:{port}", context, TokenFile(root / "token").first)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ApiAccess:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            current = config.get("current-context")
            context = _named(config.get("contexts"), current)["context"]
            cluster = _named(config.get("clusters"), context["cluster"])["cluster"]
            user = _named(config.get("users"), context["user"]).get("user") or {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as error:
            raise TokenReviewError(f"cannot use kubeconfig {path}: {error!r}") from error
        if user.get("client-certificate") or user.get("client-certificate-data"):
            raise TokenReviewError(f"kubeconfig {path}: client certificates are not supported")
        server = str(cluster["server"]).rstrip("/")
        tls: ssl.SSLContext | bool = True
        if cluster.get("insecure-skip-tls-verify"):
            tls = False
        elif cluster.get("certificate-authority-data"):
            pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
            tls = ssl.create_default_context(cadata=pem)
        elif cluster.get("certificate-authority"):
            tls = ssl.create_default_context(cafile=str(cluster["certificate-authority"]))
        if user.get("tokenFile"):
            return cls(server, tls, TokenFile(Path(user["tokenFile"])).first)
        static = str(user.get("token") or "")

        async def token() -> str:
            return static

        return cls(server, tls, token)


def _named(items: Any, name: Any) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise KeyError(f"no entry named {name!r}")


class TokenReviews:
    """Client tokens accepted after a TokenReview for this pod's audience (see module doc)."""

    def __init__(
        self,
        access: ApiAccess,
        *,
        audience: str,
        username: str,
        clock: Callable[[], float],
        timeout: float = REVIEW_TIMEOUT,
    ) -> None:
        self.access = access
        self.audience = audience
        self.username = username
        self.clock = clock
        self.timeout = timeout
        self.verdicts = VerdictCache()
        self.reviews = 0
        """TokenReviews sent so far."""
        self._checks = PendingChecks(
            MAX_PENDING_REVIEWS, lambda: TokenReviewError("too many token reviews in flight")
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def known(self, token: str) -> Outcome | None:
        """The verdict already known for `token` (an oversized one, or cached), at once."""
        if len(token.encode("utf-8", "surrogateescape")) > MAX_TOKEN_BYTES:
            return "invalid"
        cached = self.verdicts.get(token, now=self.clock())
        return None if cached is None else cached.outcome

    async def check(self, token: str) -> Outcome:
        """``allowed`` or ``invalid``; `TokenReviewError` when the API cannot be asked."""
        known = self.known(token)
        if known is not None:
            return known
        verdict = await self._checks.run(token, functools.partial(self._review, token))
        return verdict.outcome

    async def _review(self, token: str) -> Verdict:
        status = await self._ask(token)
        now = self.clock()
        verdict = judge_review(
            status,
            audience=self.audience,
            username=self.username,
            expires_at=token_expiry(token),
            now=now,
        )
        if not verdict.accepted:
            log.info("refused a client token: %s", verdict.why)
        outcome: Outcome = "allowed" if verdict.accepted else "invalid"
        result = Verdict(outcome, verdict.until)
        self.verdicts.put(token, result)
        return result

    async def _ask(self, token: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        self.reviews += 1
        try:
            own = await self.access.token()
            headers = {"Authorization": f"Bearer {own}"} if own else {}
            async with self._session.post(
                self.access.server + REVIEW_PATH,
                data=json.dumps(body),
                headers={**headers, "Content-Type": "application/json"},
                ssl=self.access.ssl,
                allow_redirects=False,
            ) as response:
                if response.status not in (200, 201):
                    raise TokenReviewError(f"TokenReview answered {response.status}")
                raw = await read_bounded(response, MAX_ANSWER_BYTES)
        except BodyTooLarge as error:
            raise TokenReviewError("TokenReview answer too large") from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise TokenReviewError(f"TokenReview failed: {error!r}") from error
        try:
            answer = json.loads(raw)
        except ValueError as error:
            raise TokenReviewError("TokenReview answer is not JSON") from error
        if not isinstance(answer, dict) or answer.get("kind") != "TokenReview":
            raise TokenReviewError("TokenReview answer is not a TokenReview")
        return answer.get("status")
