"""Authentication, as an API server with anonymous access off answers it.

Covers: a request without a bearer token is refused with a 401 Status (so a client that forgets
to send its token fails in tests, not first in a cluster); ``/version`` stays public; any token
is accepted, and the official client sends the kubeconfig's.
"""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes.client import ApiClient, VersionApi

from tests.kube.emulator import Emulator


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": "Bearer "}, id="empty"),
        pytest.param({"Authorization": "Basic dTpw"}, id="basic"),
    ],
)
async def test_no_bearer_token_is_401(kube: Emulator, headers: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{kube.url}/api/v1/namespaces/default/pods") as response,
    ):
        assert response.status == 401
        status = await response.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Unauthorized", 401)


async def test_version_is_public(kube: Emulator) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{kube.url}/version") as response:
        assert response.status == 200


def test_the_official_client_sends_the_kubeconfig_token(kube: Emulator, k8s: ApiClient) -> None:
    assert VersionApi(k8s).get_code().major == "1"
    assert kube.requests[-1].headers.get("Authorization") == f"Bearer {kube.token}"
