"""Per-pod agent credentials, the pure part (imagecache.core.podtokens).

Covers: the audience of a pod's agent (and refused pod UIDs); when a token is refreshed (80 %
of its life); the agent's verdict on a TokenReview status (accepted only when authenticated for
exactly its audience as the operator's service account; kept until the token's expiry, at most
five minutes; refusals kept briefly); reading a JWT's ``exp``; service-account usernames.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from imagecache.core.podtokens import (
    MAX_VERDICT_AGE,
    NEGATIVE_VERDICT_AGE,
    agent_audience,
    is_service_account_username,
    judge_review,
    refresh_due,
    token_expiry,
)

UID = "0b6c7e7a-1c1e-4a4e-9a57-2f7f0e9b1d33"
AUD = f"imagecache.dev/agent/{UID}"
USER = "system:serviceaccount:imagecache:imagecache-operator"
NOW = 1_000_000.0


def test_the_audience_names_the_pod() -> None:
    assert agent_audience(UID) == AUD


@pytest.mark.parametrize("uid", ["", "a/b", "x" * 200, "../x", "uid with space"])
def test_a_bad_pod_uid_has_no_audience(uid: str) -> None:
    with pytest.raises(ValueError, match="not a pod UID"):
        agent_audience(uid)


@pytest.mark.parametrize(
    ("now", "due"),
    [
        pytest.param(0.0, False, id="fresh"),
        pytest.param(2879.0, False, id="before-80-percent"),
        pytest.param(2880.0, True, id="at-80-percent"),
        pytest.param(4000.0, True, id="expired"),
    ],
)
def test_refresh_after_eighty_percent_of_the_lifetime(now: float, due: bool) -> None:
    assert refresh_due(issued_at=0.0, expires_at=3600.0, now=now) is due


def _status(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "authenticated": True,
        "user": {"username": USER},
        "audiences": [AUD],
    }
    return {**status, **overrides}


@pytest.mark.parametrize(
    ("status", "expires_at", "accepted", "until"),
    [
        pytest.param(_status(), NOW + 600, True, NOW + MAX_VERDICT_AGE, id="accepted-capped"),
        pytest.param(_status(), NOW + 60, True, NOW + 60, id="accepted-until-expiry"),
        pytest.param(_status(), None, True, NOW + MAX_VERDICT_AGE, id="accepted-no-exp"),
        pytest.param(_status(), NOW - 1, False, NOW + NEGATIVE_VERDICT_AGE, id="expired"),
        pytest.param(
            _status(authenticated=False, error="bad"),
            None,
            False,
            NOW + NEGATIVE_VERDICT_AGE,
            id="not-authenticated",
        ),
        pytest.param(
            _status(audiences=["imagecache.dev/agent/other"]),
            None,
            False,
            NOW + NEGATIVE_VERDICT_AGE,
            id="other-pod",
        ),
        pytest.param(
            _status(audiences=[AUD, "https://kubernetes.default.svc"]),
            None,
            False,
            NOW + NEGATIVE_VERDICT_AGE,
            id="more-than-ours",
        ),
        pytest.param(
            _status(user={"username": "system:serviceaccount:imagecache:someone"}),
            None,
            False,
            NOW + NEGATIVE_VERDICT_AGE,
            id="other-account",
        ),
        pytest.param("garbage", None, False, NOW + NEGATIVE_VERDICT_AGE, id="not-a-status"),
    ],
)
def test_judge_review(status: Any, expires_at: float | None, accepted: bool, until: float) -> None:
    verdict = judge_review(status, audience=AUD, username=USER, expires_at=expires_at, now=NOW)
    assert (verdict.accepted, verdict.until) == (accepted, until)
    assert verdict.accepted or verdict.why


def _jwt(claims: Any) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


@pytest.mark.parametrize(
    ("token", "expiry"),
    [
        pytest.param(_jwt({"exp": 1234}), 1234.0, id="exp"),
        pytest.param(_jwt({"iat": 1}), None, id="no-exp"),
        pytest.param(_jwt({"exp": "soon"}), None, id="exp-not-number"),
        pytest.param(_jwt([1]), None, id="not-an-object"),
        pytest.param("opaque-token", None, id="not-a-jwt"),
        pytest.param("a.!!!.c", None, id="bad-base64"),
    ],
)
def test_token_expiry(token: str, expiry: float | None) -> None:
    assert token_expiry(token) == expiry


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        (USER, True),
        ("system:serviceaccount:ns", False),
        ("admin", False),
        ("system:serviceaccount:NS:x", False),
    ],
)
def test_service_account_usernames(name: str, ok: bool) -> None:
    assert is_service_account_username(name) is ok
