"""``auth = kubernetes``: client tokens judged by a TokenReview (agent/token_review.py).

Covers, against the strict emulator's TokenRequest/TokenReview: a token of the operator's
service account minted for this pod's audience is accepted, and the verdict is reused (one
review for many requests); refused (401): a token for another pod's audience, one for the API
server, one of another service account, a garbage token, an oversized token (without a review);
the token-file tokens still work; the agent's own credentials refused by the API server → 503,
never a 200; the settings refuse the mode without a pod UID or an operator account; outside a
cluster without --kubeconfig the agent stops at start with one line and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagecache.agent.settings import AgentSettings, SettingsError, load_settings
from tests.agent.conftest import AgentFactory
from tests.kube.emulator import Emulator
from tests.kube.tokens import API_AUDIENCE

NS, OPERATOR_SA, OTHER_SA = "default", "imagecache-operator", "someone-else"
USERNAME = f"system:serviceaccount:{NS}:{OPERATOR_SA}"
POD_UID = "6f1c7d2e-0000-4000-8000-000000000001"
OTHER_UID = "6f1c7d2e-0000-4000-8000-000000000002"
REVIEWER = "agent-reviewer"


async def _accounts(kube: Emulator) -> None:
    for name in (OPERATOR_SA, OTHER_SA):
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        await kube.client.create("serviceaccounts", body, namespace=NS)


async def _mint(kube: Emulator, audience: str, account: str = OPERATOR_SA) -> str:
    path = f"/api/v1/namespaces/{NS}/serviceaccounts/{account}/token"
    body = {"kind": "TokenRequest", "spec": {"audiences": [audience], "expirationSeconds": 600}}
    code, answer = await kube.client.request("POST", path, body=body)
    assert code == 201, answer
    return str(answer["status"]["token"])


def _settings(kube: Emulator, **overrides: Any) -> dict[str, Any]:
    return {
        "auth": "kubernetes",
        "pod_uid": POD_UID,
        "operator_service_account": USERNAME,
        "kubeconfig": kube.kubeconfig_for(REVIEWER),
        **overrides,
    }


async def _status(agent: Any, token: str) -> int:
    async with agent.client.get("/v2/cache", headers={"X-Auth-Token": token}) as response:
        return int(response.status)


async def test_only_the_operators_token_for_this_pod_is_accepted(
    kube: Emulator, make_agent: AgentFactory, tmp_path: Path
) -> None:
    await _accounts(kube)
    accepted_file = tmp_path / "tokens"
    accepted_file.write_text("file-token\n")
    agent = await make_agent(**_settings(kube), token_file=accepted_file)
    good = await _mint(kube, f"imagecache.dev/agent/{POD_UID}")
    assert await _status(agent, good) == 200
    reviews = kube.mock.tokens.reviews
    for _ in range(5):
        assert await _status(agent, good) == 200
    assert kube.mock.tokens.reviews == reviews, "the verdict is kept, not asked again"
    refused = {
        "other-pod": await _mint(kube, f"imagecache.dev/agent/{OTHER_UID}"),
        "api-server": await _mint(kube, API_AUDIENCE),
        "other-account": await _mint(kube, f"imagecache.dev/agent/{POD_UID}", OTHER_SA),
        "garbage": "not.a.token",
    }
    for what, token in refused.items():
        assert await _status(agent, token) == 401, what
    before = kube.mock.tokens.reviews
    assert await _status(agent, "x" * 10_000) == 401
    assert kube.mock.tokens.reviews == before, "an oversized token is refused without a review"
    assert await _status(agent, "file-token") == 200


async def test_a_refused_agent_credential_is_503_not_access(
    kube: Emulator, make_agent: AgentFactory
) -> None:
    await _accounts(kube)
    agent = await make_agent(**_settings(kube))
    good = await _mint(kube, f"imagecache.dev/agent/{POD_UID}")
    kube.revoke_token(REVIEWER)
    assert await _status(agent, good) == 503
    assert await _status(agent, "") == 401


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["--auth", "kubernetes"], "pod_uid", id="no-pod-uid"),
        pytest.param(["--auth", "kubernetes", "--pod-uid", "a/b"], "pod_uid", id="bad-uid"),
        pytest.param(
            ["--auth", "kubernetes", "--pod-uid", POD_UID], "operator_service_account", id="no-sa"
        ),
        pytest.param(
            [
                "--auth",
                "kubernetes",
                "--pod-uid",
                POD_UID,
                "--operator-service-account",
                "admin",
            ],
            "operator_service_account",
            id="not-an-sa",
        ),
    ],
)
def test_kubernetes_mode_needs_its_settings(args: list[str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(["--upstream", "file:///tmp", *args])


def test_kubernetes_mode_counts_as_auth_on_the_network() -> None:
    settings = AgentSettings(
        upstream="file:///tmp",
        listen="0.0.0.0:9292",
        auth="kubernetes",
        pod_uid=POD_UID,
        operator_service_account=USERNAME,
    )
    assert settings.auth == "kubernetes"


def test_no_way_to_the_api_stops_the_agent_with_one_clear_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "IMAGECACHE_"))}
    args = ["--upstream", f"file://{tmp_path}", "--cache-dir", str(tmp_path / "cache")]
    args += ["--auth", "kubernetes", "--pod-uid", POD_UID, "--operator-service-account", USERNAME]
    done = subprocess.run(
        [sys.executable, "-m", "imagecache.agent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid setting kubeconfig" in done.stderr and "not in a cluster" in done.stderr
