"""`PodTokenCredentials` (controller/credentials.py) against the emulator's TokenRequest API.

Covers: the token is minted for ``imagecache.dev/agent/<pod-uid>`` and a TokenReview accepts it
for that audience only; concurrent calls for one pod share one TokenRequest; a token is reused
until four fifths of its life have passed, then replaced before it expires; the cache is bounded
(least recently used dropped); no pod UID, a malformed UID or a refused TokenRequest is a
`CredentialUnavailable` naming the cause, never another exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from imagecache.controller.credentials import PodTokenCredentials
from imagecache.controller.errors import CredentialUnavailable
from imagecache.controller.kubeclient import ApiCredentials, RefreshingApiClient, open_api_client
from tests.kube.emulator import Emulator

NS, SA = "default", "imagecache-operator"
UID_A = "0b6c7e7a-1c1e-4a4e-9a57-2f7f0e9b1d33"
UID_B = "0b6c7e7a-1c1e-4a4e-9a57-2f7f0e9b1d34"
UID_C = "0b6c7e7a-1c1e-4a4e-9a57-2f7f0e9b1d35"
SECONDS = 600


@pytest.fixture
async def api(kube: Emulator) -> AsyncIterator[RefreshingApiClient]:
    credentials = ApiCredentials(lambda: kopf.ConnectionInfo(server=kube.url, token="op"))
    async with await open_api_client(credentials) as client:
        yield client


async def _account(kube: Emulator) -> None:
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}}
    await kube.client.create("serviceaccounts", body, namespace=NS)


def _tokens(api: Any, clock: Any = time.time, **kwargs: Any) -> PodTokenCredentials:
    return PodTokenCredentials(
        api, namespace=NS, service_account=SA, seconds=SECONDS, clock=clock, **kwargs
    )


async def _review(kube: Emulator, token: str, audience: str) -> bool:
    body = {"kind": "TokenReview", "spec": {"token": token, "audiences": [audience]}}
    code, answer = await kube.client.request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body
    )
    assert code == 201
    return bool(answer["status"]["authenticated"])


async def test_the_token_names_the_pod_and_is_shared_by_concurrent_calls(
    kube: Emulator, api: RefreshingApiClient
) -> None:
    await _account(kube)
    tokens = _tokens(api)
    answers = await asyncio.gather(
        *(tokens.headers_for(endpoint="http://x", pod_uid=UID_A) for _ in range(5))
    )
    assert tokens.requests == 1 and kube.mock.tokens.issued == 1
    token = answers[0]["X-Auth-Token"]
    assert all(a == {"X-Auth-Token": token} for a in answers)
    assert await _review(kube, token, f"imagecache.dev/agent/{UID_A}")
    assert not await _review(kube, token, f"imagecache.dev/agent/{UID_B}")


async def test_a_token_is_replaced_after_four_fifths_of_its_life(
    kube: Emulator, api: RefreshingApiClient
) -> None:
    await _account(kube)
    offset = [0.0]
    tokens = _tokens(api, clock=lambda: time.time() + offset[0])
    first = await tokens.headers_for(endpoint="http://x", pod_uid=UID_A)
    offset[0] = 0.7 * SECONDS
    assert await tokens.headers_for(endpoint="http://x", pod_uid=UID_A) == first
    offset[0] = 0.85 * SECONDS
    assert await tokens.headers_for(endpoint="http://x", pod_uid=UID_A) != first
    assert tokens.requests == 2


async def test_the_cache_is_bounded(kube: Emulator, api: RefreshingApiClient) -> None:
    await _account(kube)
    tokens = _tokens(api, max_cached=2)
    for uid in (UID_A, UID_B, UID_A, UID_C):  # A used again: B is the least recent
        await tokens.headers_for(endpoint="http://x", pod_uid=uid)
    assert len(tokens) == 2 and tokens.requests == 3
    await tokens.headers_for(endpoint="http://x", pod_uid=UID_A)
    assert tokens.requests == 3
    await tokens.headers_for(endpoint="http://x", pod_uid=UID_B)
    assert tokens.requests == 4


@pytest.mark.parametrize(
    ("pod_uid", "account", "needle"),
    [
        pytest.param(None, True, "no pod UID", id="no-uid"),
        pytest.param("../x", True, "not a pod UID", id="bad-uid"),
        pytest.param(UID_A, False, "404", id="no-account"),
    ],
)
async def test_failures_are_credential_unavailable(
    kube: Emulator, api: RefreshingApiClient, pod_uid: str | None, account: bool, needle: str
) -> None:
    if account:
        await _account(kube)
    with pytest.raises(CredentialUnavailable, match=needle):
        await _tokens(api).headers_for(endpoint="http://x", pod_uid=pod_uid)
