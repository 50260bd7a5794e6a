"""Service-account tokens as the API server issues and reviews them: TokenRequest, TokenReview.

`TokenAuthority` issues JWT-shaped tokens (``header.payload.signature``, base64url, signed with
a per-emulator HMAC key, so a token edited by hand no longer verifies) for
``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` and judges them for
``POST /apis/authentication.k8s.io/v1/tokenreviews`` and for every bearer token the emulator
itself is sent. The semantics follow ``pkg/serviceaccount`` and
``pkg/registry/core/serviceaccount``:

* the service account must exist (404 otherwise); ``spec.audiences`` defaults to the API
  server's own audience (`API_AUDIENCE`); ``expirationSeconds`` defaults to 3600 and must be at
  least 600 (422); the answer's ``status.expirationTimestamp`` is when it expires;
* an optional ``boundObjectRef`` (Pod or Secret, in the account's namespace) must exist and match
  its ``uid`` when one is given; the token stops working once that object is gone or replaced;
* a review authenticates a token that verifies, has not expired, whose account (and bound
  object) still exists, and whose audiences intersect the review's ``spec.audiences`` (the API
  server's audience when none are given); ``status.audiences`` is that intersection. Anything else
  is ``authenticated: false`` with an ``error``, never an HTTP error;
* as a bearer token to the emulator, an issued token needs `API_AUDIENCE` among its audiences
  (a token minted for an agent does not work against the API server). Other bearer tokens are
  "static" (the kubeconfig's) and accepted unless `revoke`d, which is how a test rotates a
  client's credentials.

Thread-safety: issue/review run on the emulator's loop, `revoke` from the test's thread; a lock
guards the shared state.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kube.errors import BadRequest, Conflict, NotFound
from tests.kube.schema import FieldError, refusal

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600
BOUND_KINDS = {"Pod": "pods", "Secret": "secrets"}

Lookup = Callable[[str, str, str], dict[str, Any] | None]
"""(plural, namespace, name) -> the stored object or None."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Issued:
    """What a token was issued for."""

    username: str
    service_account_uid: str
    audiences: tuple[str, ...]
    expires: float  # epoch seconds
    bound: tuple[str, str, str, str] | None  # plural, namespace, name, uid


class TokenAuthority:
    """Issues and judges service-account tokens; remembers static tokens revoked by tests."""

    def __init__(self, lookup: Lookup, clock: Callable[[], float] = time.time) -> None:
        self._lookup = lookup
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self.issued = 0
        """How many tokens were issued so far."""
        self.reviews = 0
        """How many TokenReviews were answered so far."""

    # -- TokenRequest --------------------------------------------------------------------------

    def request(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """The TokenRequest answer for service account `namespace/name` (or the API's error)."""
        account = self._lookup("serviceaccounts", namespace, name)
        if account is None:
            raise NotFound(f'serviceaccounts "{name}" not found')
        if not isinstance(body, dict) or body.get("kind", "TokenRequest") != "TokenRequest":
            raise BadRequest("the body of the request was not a TokenRequest")
        spec = body.get("spec") or {}
        audiences = spec.get("audiences") or [API_AUDIENCE]
        seconds = spec.get("expirationSeconds", DEFAULT_SECONDS)
        errors = []
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            errors.append(FieldError("spec.audiences", "FieldValueInvalid", "must be strings"))
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < MIN_SECONDS:
            errors.append(
                FieldError(
                    "spec.expirationSeconds",
                    "FieldValueInvalid",
                    f"Invalid value: {seconds!r}: may not specify a duration less than 10 minutes",
                )
            )
        if errors:
            raise refusal("TokenRequest", "authentication.k8s.io", name, errors)
        bound = self._bound(namespace, spec.get("boundObjectRef"))
        now = self.clock()
        issued = Issued(
            username=f"system:serviceaccount:{namespace}:{name}",
            service_account_uid=str(account["metadata"].get("uid", "")),
            audiences=tuple(audiences),
            expires=now + seconds,
            bound=bound,
        )
        with self._lock:
            self.issued += 1
        expiry = datetime.datetime.fromtimestamp(issued.expires, datetime.UTC)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {
                "audiences": list(audiences),
                "expirationSeconds": seconds,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {
                "token": self._sign(issued, now),
                "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }

    def _bound(self, namespace: str, ref: Any) -> tuple[str, str, str, str] | None:
        if ref is None:
            return None
        kind = ref.get("kind") if isinstance(ref, dict) else None
        if kind not in BOUND_KINDS:
            raise refusal(
                "TokenRequest",
                "authentication.k8s.io",
                "",
                [FieldError("spec.boundObjectRef.kind", "FieldValueNotSupported", repr(kind))],
            )
        plural, name = BOUND_KINDS[kind], str(ref.get("name") or "")
        target = self._lookup(plural, namespace, name)
        if target is None:
            raise NotFound(f'{plural} "{name}" not found')
        uid = str(target["metadata"].get("uid", ""))
        if ref.get("uid") and ref["uid"] != uid:
            raise Conflict(
                f"the UID in the bound object reference ({ref['uid']}) does not match the UID "
                f"in record. The object might have been deleted and then recreated"
            )
        return (plural, namespace, name, uid)

    def _sign(self, issued: Issued, now: float) -> str:
        payload: dict[str, Any] = {
            "aud": list(issued.audiences),
            "exp": int(issued.expires),
            "iat": int(now),
            "iss": API_AUDIENCE,
            "jti": str(uuid.uuid4()),
            "sub": issued.username,
            "kubernetes.io": {
                "serviceaccount": {
                    "name": issued.username.rsplit(":", 1)[-1],
                    "uid": issued.service_account_uid,
                },
                **({"boundObject": list(issued.bound)} if issued.bound else {}),
            },
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"

    # -- judging -------------------------------------------------------------------------------

    def _verify(self, token: str) -> tuple[Issued | None, str]:
        """The issued token's claims if it verifies and is still valid, else why not."""
        parts = token.split(".")
        if len(parts) != 3:
            return None, "not a service account token"
        mac = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(parts[2]), mac):
                return None, "invalid bearer token, token could not be validated"
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None, "invalid bearer token, token could not be validated"
        if claims["exp"] <= self.clock():
            return None, "invalid bearer token, service account token has expired"
        account = claims["kubernetes.io"]["serviceaccount"]
        namespace = claims["sub"].split(":")[2]
        live = self._lookup("serviceaccounts", namespace, account["name"])
        if live is None or str(live["metadata"].get("uid", "")) != account["uid"]:
            return None, "service account has been deleted"
        bound = claims["kubernetes.io"].get("boundObject")
        if bound is not None:
            target = self._lookup(bound[0], bound[1], bound[2])
            if target is None or str(target["metadata"].get("uid", "")) != bound[3]:
                return None, f"{bound[0]} {bound[2]} bound to the token has been deleted"
        issued = Issued(
            username=claims["sub"],
            service_account_uid=account["uid"],
            audiences=tuple(claims["aud"]),
            expires=float(claims["exp"]),
            bound=tuple(bound) if bound else None,  # type: ignore[arg-type]
        )
        return issued, ""

    def review(self, body: Any) -> dict[str, Any]:
        """The TokenReview answer (always 201 with a status, as the API server does)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("token"), str):
            raise BadRequest("the body of the request was not a TokenReview")
        token = spec["token"]
        wanted = spec.get("audiences") or [API_AUDIENCE]
        with self._lock:
            self.reviews += 1
        issued, why = self._verify(token)
        status: dict[str, Any] = {"authenticated": False, "user": {}, "error": why}
        if issued is not None:
            common = [a for a in wanted if a in issued.audiences]
            if not common:
                status["error"] = "token audiences is invalid for the target audiences"
            else:
                status = {
                    "authenticated": True,
                    "user": {
                        "username": issued.username,
                        "uid": issued.service_account_uid,
                        "groups": [
                            "system:serviceaccounts",
                            f"system:serviceaccounts:{issued.username.split(':')[2]}",
                            "system:authenticated",
                        ],
                    },
                    "audiences": common,
                }
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, "audiences": spec.get("audiences")},
            "status": status,
        }

    def accepts_bearer(self, token: str) -> bool:
        """May this bearer token talk to the emulator itself?"""
        with self._lock:
            if token in self._revoked:
                return False
        if token.count(".") != 2:
            return True  # a static token (a kubeconfig's)
        issued, _ = self._verify(token)
        return issued is not None and API_AUDIENCE in issued.audiences

    def revoke(self, token: str) -> None:
        """Refuse this static token from now on (401), as after a credential rotation."""
        with self._lock:
            self._revoked.add(token)
