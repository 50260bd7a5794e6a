"""Per-pod agent credentials end to end (issue 14, item 4): nothing a pod receives works elsewhere.

Covers, with the operator in ``agent_auth = kubernetes`` and real agents in ``auth = kubernetes``
(TokenReview against the emulator, no shared token at all): a selector matches a real agent
pod and a pod whose ``imagecache.dev/port`` annotation points at a recording listener; the
listener receives a token; replayed against the real agent it is refused (401), and against the
API server too (401: minted for an agent audience), while the real target still reaches Cached;
a token is requested once per pod, not per call; a TokenRequest the API refuses shows as the
target's ``CredentialUnavailable`` reason, and the operator keeps running.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    HeaderRecorder,
    create_agent_pod,
    image_bytes,
    image_id,
    request_body,
    start_operator,
    wait_for_status,
    wait_until,
)
from tests.support.agents import AgentProcess, free_port
from tests.support.upstreams import HttpFileServer

NS, OPERATOR_SA = "default", "imagecache-operator"
USERNAME = f"system:serviceaccount:{NS}:{OPERATOR_SA}"
SETTINGS = {
    "agent_auth": "kubernetes",
    "service_account": OPERATOR_SA,
    "service_account_namespace": NS,
}


@pytest.fixture
async def recorder() -> AsyncIterator[HeaderRecorder]:
    async with HeaderRecorder("127.0.0.3") as listener:
        yield listener


async def _account(kube: Emulator) -> None:
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}}
    await kube.client.create("serviceaccounts", body, namespace=NS)


def _replay(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"X-Auth-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _target(status: dict[str, Any], pod: str) -> dict[str, Any]:
    return next((t for t in status.get("targets") or [] if t.get("pod") == pod), {})


async def test_a_token_stolen_by_a_matched_pod_works_nowhere_else(
    kube: Emulator, tmp_path: Path, upstream: HttpFileServer, recorder: HeaderRecorder
) -> None:
    await _account(kube)
    image = image_id(140)
    upstream.add(image, image_bytes("per-pod", 64 * 1024))
    labels = {"app": "glance"}
    # The agent's port is known before it starts: the annotation can name it at creation.
    agent_port = free_port("127.0.0.2")
    pod = await kube.client.create_pod(
        NS,
        "glance-0",
        ip="127.0.0.2",
        labels=labels,
        annotations={"imagecache.dev/port": str(agent_port)},
    )
    await create_agent_pod(kube, "thief", recorder, namespace=NS, labels=labels)
    agent = AgentProcess(
        cache_dir=tmp_path / "agent" / "cache",
        upstream=upstream.upstream,
        host="127.0.0.2",
        port=agent_port,
        extra_args=[
            "--auth",
            "kubernetes",
            "--pod-uid",
            pod["metadata"]["uid"],
            "--operator-service-account",
            USERNAME,
            "--kubeconfig",
            str(kube.kubeconfig_for("agent-reviewer")),
        ],
    )
    agent.cache_dir.parent.mkdir(parents=True)
    agent.start()
    running = await start_operator(kube, token_file=None, **SETTINGS)
    try:
        # Fan-out off: this test counts the targets' own tokens (a fan-out fill would add the
        # peer-read token of glance-0 for the thief: test_fanout.py covers those).
        fanout = {"fanout": {"enabled": False}}
        await kube.client.create(
            ICR, request_body("fleet", image, selector={"matchLabels": labels}, **fanout)
        )
        status = await wait_for_status(
            kube, "fleet", lambda s: _target(s, "glance-0").get("phase") == "Cached"
        )
        await wait_until(
            lambda: recorder.values("X-Auth-Token"), within=10, what="the thief got a token"
        )
        requests_before = kube.mock.tokens.issued
        await asyncio.sleep(1.0)  # a few more polls: tokens are reused, not minted per call
        assert kube.mock.tokens.issued == requests_before
        assert _target(status, "thief").get("phase") != "Cached"
        stolen = recorder.values("X-Auth-Token")[-1]
        assert await asyncio.to_thread(_replay, f"{agent.url}/v2/cache", stolen) == 401
        api = f"{kube.url}/api/v1/namespaces/{NS}/pods"
        assert await asyncio.to_thread(_replay, api, stolen) == 401
        assert kube.mock.tokens.issued == 2, "one token per pod"
        accounts = {
            r.url.path
            for r in kube.requests
            if "/serviceaccounts" in r.url.path
            and r.headers.get("User-Agent", "").startswith("imagecache-operator")
        }
        own = f"/api/v1/namespaces/{NS}/serviceaccounts/{OPERATOR_SA}/token"
        assert accounts == {own}, "TokenRequests only, for its own account (RBAC)"
    finally:
        await running.stop()
        agent.kill()


async def test_a_refused_token_request_is_the_targets_reason(
    kube: Emulator, recorder: HeaderRecorder
) -> None:
    await create_agent_pod(kube, "glance-0", recorder, namespace=NS)
    # No service account: every TokenRequest is answered 404.
    running = await start_operator(kube, token_file=None, **SETTINGS)
    try:
        await kube.client.create(ICR, request_body("r", image_id(141), pod="glance-0"))
        status = await wait_for_status(
            kube, "r", lambda s: s.get("reason") == "CredentialUnavailable"
        )
    finally:
        await running.stop()
    assert "TokenRequest" in status["message"] and "404" in status["message"]
    assert recorder.values("X-Auth-Token") == [], "nothing was sent without a credential"
