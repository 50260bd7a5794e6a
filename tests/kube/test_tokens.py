"""TokenRequest and TokenReview as the API server answers them; revoked tokens; delays.

Covers: a TokenRequest for an existing service account answers a token with its audiences and
expiry (default audience: the API server's), a missing account is 404, a too short expiry 422;
a review authenticates a token only for an audience it was minted for (``status.audiences``
the intersection), and refuses an unknown, tampered, expired or wrong-audience token with
``authenticated: false``; a token bound to a pod dies with the pod; a token minted for an agent
audience does not work against the API server itself, one for the API server does; a revoked
static token is answered 401; a `Delay` holds matching requests (and only those).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.kube.emulator import Emulator
from tests.kube.tokens import API_AUDIENCE

NS, SA = "default", "imagecache-operator"
TOKEN_PATH = f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token"
REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


async def _account(kube: Emulator) -> None:
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}}
    await kube.client.create("serviceaccounts", body, namespace=NS)


def _request(audiences: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
    body["spec"] = {**({"audiences": audiences} if audiences else {}), **spec}
    return body


async def _mint(kube: Emulator, audiences: list[str] | None = None, **spec: Any) -> str:
    code, answer = await kube.client.request("POST", TOKEN_PATH, body=_request(audiences, **spec))
    assert code == 201, answer
    return str(answer["status"]["token"])


async def _review(kube: Emulator, token: str, audiences: list[str] | None) -> dict[str, Any]:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, **({"audiences": audiences} if audiences else {})},
    }
    code, answer = await kube.client.request("POST", REVIEWS, body=body)
    assert code == 201, answer
    return dict(answer["status"])


async def test_a_token_request_answers_a_token_with_its_audience_and_expiry(kube: Emulator) -> None:
    await _account(kube)
    code, answer = await kube.client.request(
        "POST", TOKEN_PATH, body=_request(["imagecache.dev/agent/x"], expirationSeconds=900)
    )
    assert code == 201
    assert answer["spec"]["audiences"] == ["imagecache.dev/agent/x"]
    assert answer["status"]["token"].count(".") == 2
    assert answer["status"]["expirationTimestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("create_account", "spec", "code"),
    [
        pytest.param(False, {}, 404, id="no-account"),
        pytest.param(True, {"expirationSeconds": 60}, 422, id="too-short"),
        pytest.param(True, {"boundObjectRef": {"kind": "Pod", "name": "nope"}}, 404, id="no-pod"),
    ],
)
async def test_token_requests_refused(
    kube: Emulator, create_account: bool, spec: dict[str, Any], code: int
) -> None:
    if create_account:
        await _account(kube)
    answered, _ = await kube.client.request("POST", TOKEN_PATH, body=_request(None, **spec))
    assert answered == code


async def test_a_review_authenticates_only_for_the_minted_audience(kube: Emulator) -> None:
    await _account(kube)
    token = await _mint(kube, ["imagecache.dev/agent/a"])
    good = await _review(kube, token, ["imagecache.dev/agent/a", "other"])
    assert good["authenticated"] is True
    assert good["audiences"] == ["imagecache.dev/agent/a"]
    assert good["user"]["username"] == f"system:serviceaccount:{NS}:{SA}"
    for audiences in (["imagecache.dev/agent/b"], None):
        status = await _review(kube, token, audiences)
        assert status["authenticated"] is False and status["error"]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: "not-a-token", id="unknown"),
        pytest.param(
            lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), id="tampered"
        ),
    ],
)
async def test_unknown_and_tampered_tokens_are_not_authenticated(
    kube: Emulator, mangle: Any
) -> None:
    await _account(kube)
    token = await _mint(kube, ["aud"])
    status = await _review(kube, mangle(token), ["aud"])
    assert status["authenticated"] is False


async def test_an_expired_token_is_not_authenticated(kube: Emulator) -> None:
    await _account(kube)
    token = await _mint(kube, ["aud"])
    kube.mock.tokens.clock = lambda: time.time() + 3601
    status = await _review(kube, token, ["aud"])
    assert status["authenticated"] is False and "expired" in status["error"]


async def test_a_token_bound_to_a_pod_dies_with_the_pod(kube: Emulator) -> None:
    await _account(kube)
    pod = await kube.client.create_pod(NS, "p", ip="127.0.0.9")
    bound = {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod["metadata"]["uid"]}
    token = await _mint(kube, ["aud"], boundObjectRef=bound)
    assert (await _review(kube, token, ["aud"]))["authenticated"] is True
    await kube.client.delete("pods", "p", namespace=NS)
    assert (await _review(kube, token, ["aud"]))["authenticated"] is False


async def test_only_tokens_for_the_api_audience_work_against_the_api(kube: Emulator) -> None:
    await _account(kube)
    for audiences, code in (([API_AUDIENCE], 200), (None, 200), (["imagecache.dev/agent/a"], 401)):
        token = await _mint(kube, audiences)
        client_code, _ = await _get_pods(kube, token)
        assert client_code == code, audiences


async def _get_pods(kube: Emulator, token: str) -> tuple[int, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{kube.url}/api/v1/namespaces/{NS}/pods") as response,
    ):
        return response.status, await response.read()


async def test_a_revoked_static_token_is_refused(kube: Emulator) -> None:
    assert (await _get_pods(kube, "rotating-1"))[0] == 200
    kube.revoke_token("rotating-1")
    assert (await _get_pods(kube, "rotating-1"))[0] == 401
    assert (await _get_pods(kube, "rotating-2"))[0] == 200


async def test_a_delay_holds_matching_requests_only(kube: Emulator) -> None:
    delay = kube.delay(0.5, resource="leases", methods={"GET"})
    started = time.monotonic()
    code, _ = await kube.client.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    )
    assert code == 200 and time.monotonic() - started >= 0.5
    started = time.monotonic()
    await kube.client.request("GET", f"/api/v1/namespaces/{NS}/pods")
    assert time.monotonic() - started < 0.5
    assert delay.delayed == 1
    delay.clear()
    started = time.monotonic()
    await kube.client.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases")
    assert time.monotonic() - started < 0.5
