"""Per-pod agent credentials, the decisions only (issue 14, item 4; docs/security.md).

The operator sends each agent a short-lived token of its own service account whose audience
names that agent's pod (`agent_audience`); the agent accepts a token only after a TokenReview
says it is authenticated for exactly that audience and belongs to the operator's service
account (`judge_review`). A token read off the wire by one pod therefore works against no other
agent. This module holds what both sides must agree on, and the timing rules:

* `agent_audience`: ``imagecache.dev/agent/<pod-uid>``;
* `refresh_due`: the operator asks for a new token once 80 % of the old one's life has passed
  (the kubelet's rule for projected tokens), so a token is never used close to its expiry;
* `judge_review`: the agent's verdict on a TokenReview status, and until when it may be kept
  (the token's own expiry, at most `MAX_VERDICT_AGE`; a refusal only `NEGATIVE_VERDICT_AGE`);
* `token_expiry`: the ``exp`` claim of a JWT, read without verifying it -- used only to bound
  how long a verdict the API server gave is kept, never to accept anything.

Pure: no I/O, no clock (``now`` is passed in, epoch seconds).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AUDIENCE_PREFIX = "imagecache.dev/agent/"
PEER_AUDIENCE_PREFIX = "imagecache.dev/peer/"
"""Fleet fill: a token for this audience lets another agent *read a cached image* from the
agent of that pod (a peer read), nothing else."""
MAX_TOKEN_BYTES = 8 * 1024
"""A presented token longer than this is refused before anything is asked (real service
account tokens are ~1 KiB)."""
MAX_VERDICT_AGE = 300.0
"""Seconds an accepting verdict is kept at most (a deleted service account is noticed by then)."""
NEGATIVE_VERDICT_AGE = 10.0
"""Seconds a refusal is kept: a flood of one bad token costs one review per this period."""
REFRESH_FRACTION = 0.8
"""A token is replaced once this fraction of its lifetime has passed."""

_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
_USERNAME = re.compile(r"^system:serviceaccount:[a-z0-9.-]{1,253}:[a-z0-9.-]{1,253}$")


def agent_audience(pod_uid: str) -> str:
    """The audience of tokens meant for the agent of pod `pod_uid` (a Kubernetes UID)."""
    if not _UID.match(pod_uid):
        raise ValueError(f"not a pod UID: {pod_uid!r}")
    return AUDIENCE_PREFIX + pod_uid


def peer_audience(pod_uid: str) -> str:
    """The audience of tokens that let another agent read cached images from pod `pod_uid`'s
    agent (fleet fill): accepted by that agent for peer reads only."""
    if not _UID.match(pod_uid):
        raise ValueError(f"not a pod UID: {pod_uid!r}")
    return PEER_AUDIENCE_PREFIX + pod_uid


def is_service_account_username(value: str) -> bool:
    """``system:serviceaccount:<namespace>:<name>``?"""
    return bool(_USERNAME.match(value))


def refresh_due(*, issued_at: float, expires_at: float, now: float) -> bool:
    """Should a token issued at `issued_at`, expiring at `expires_at`, be replaced `now`?"""
    return now >= issued_at + REFRESH_FRACTION * max(0.0, expires_at - issued_at)


@dataclass(frozen=True)
class ReviewVerdict:
    """The agent's verdict on one token, and until when (epoch seconds) it may be reused."""

    accepted: bool
    until: float
    why: str = ""


def judge_review(
    status: Any,
    *,
    audience: str,
    username: str,
    expires_at: float | None,
    now: float,
) -> ReviewVerdict:
    """Accept a token only if the review says: authenticated, for `audience` and nothing else
    we asked, as user `username`. Kept until the token expires (at most `MAX_VERDICT_AGE`);
    a refusal for `NEGATIVE_VERDICT_AGE`."""
    refused = now + NEGATIVE_VERDICT_AGE
    if not isinstance(status, Mapping) or status.get("authenticated") is not True:
        error = status.get("error") if isinstance(status, Mapping) else None
        return ReviewVerdict(False, refused, f"not authenticated: {error or 'no reason given'}")
    audiences = status.get("audiences")
    if audiences != [audience]:
        return ReviewVerdict(False, refused, f"audiences {audiences!r}, want [{audience!r}]")
    user = status.get("user")
    name = user.get("username") if isinstance(user, Mapping) else None
    if name != username:
        return ReviewVerdict(False, refused, f"user {name!r} is not {username!r}")
    if expires_at is not None and expires_at <= now:
        return ReviewVerdict(False, refused, "the token has expired")
    until = now + MAX_VERDICT_AGE
    if expires_at is not None:
        until = min(until, expires_at)
    return ReviewVerdict(True, until)


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only to bound a cache), None if there is none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)
