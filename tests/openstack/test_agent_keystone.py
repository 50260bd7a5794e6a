"""Keystone on both sides of the agent, against a real Keystone 30 and Glance 33 (SPEC §2.8).

Covers:
- inbound, keystone mode, side by side with Glance: an admin token is served, a member-only
  token is refused 403, an unknown token and no token 401, in Glance's error shape; the
  operator's token from the agent's token file is accepted too; probes and /metrics stay open;
- upstream with password credentials and an explicit ``glance+http://`` URL (the application
  credential and ``glance://`` through the catalog are the other tests' agents);
- an ``os_cloud`` that clouds.yaml does not have stops the agent at start with one line;
- with tokens that live 30 s: a client token that expired is refused 401 although it was
  accepted (and its verdict cached) before, and the agent still caches after its own first
  token expired (keystoneauth renewed it; no upstream request was refused 401).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openstack.agent_cloud import (
    OPERATOR_TOKEN,
    Transcript,
    http,
    running_agent,
    wait_cached,
)
from tests.openstack.cloud import OpenStackCloud
from tests.openstack.conftest import SHORT_TOKEN_EXPIRATION
from tests.support.agents import AgentProcess


@pytest.fixture(scope="module")
def agent(
    openstack_cloud: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    with running_agent(openstack_cloud, tmp_path_factory.mktemp("keystone-agent")) as process:
        yield process


def answer(method: str, url: str, token: str | None) -> tuple[int, dict[str, str] | None]:
    status, _, body = http(method, url, token=token, headers={"Accept": "application/json"})
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    return status, doc


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/cache"), ("POST", "/v2/cache/prune")])
def test_inbound_tokens_answered_as_glance_does(
    openstack_cloud: OpenStackCloud, agent: AgentProcess, method: str, path: str
) -> None:
    log = Transcript()
    tokens = {
        "admin": openstack_cloud.issue_token("admin"),
        "member": openstack_cloud.issue_token("demo"),
        "unknown": "gAAAAABnot-a-real-token",
        "none": None,
    }
    expected = {"admin": 200, "member": 403, "unknown": 401, "none": 401}
    for label, token in tokens.items():
        got = {}
        for target, base in (("agent", agent.url), ("glance", openstack_cloud.glance_url)):
            got[target] = answer(method, f"{base}{path}", token)
            log.record(f"[{target}] {method} {path} with {label} token", f"{got[target][0]}")
        assert got["agent"][0] == got["glance"][0] == expected[label], (label, got)
        if expected[label] >= 400:
            agent_doc, glance_doc = got["agent"][1], got["glance"][1]
            assert agent_doc is not None and glance_doc is not None
            assert agent_doc.keys() == glance_doc.keys() == {"code", "title", "message"}
            assert agent_doc["code"] == glance_doc["code"]


def test_operator_token_and_open_probes(agent: AgentProcess) -> None:
    assert answer("GET", f"{agent.url}/v2/cache", OPERATOR_TOKEN)[0] == 200
    for path in ("/healthz", "/readyz", "/metrics", "/versions"):
        assert http("GET", f"{agent.url}{path}")[0] == 200, path


def test_password_cloud_with_an_explicit_glance_url(
    openstack_cloud: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory
) -> None:
    image = openstack_cloud.image("imagecache-test-medium")
    upstream = "glance+" + openstack_cloud.glance_url
    with running_agent(
        openstack_cloud,
        tmp_path_factory.mktemp("password-agent"),
        os_cloud="admin",
        auth="token-file",
        upstream=upstream,
    ) as agent:
        assert http("PUT", f"{agent.url}/v2/cache/{image.id}", token=OPERATOR_TOKEN)[0] == 202
        report = wait_cached(agent, image.id)
        assert report["size"] == image.size
        status, _, body = http(
            "GET", f"{agent.url}/v2/images/{image.id}/file", token=OPERATOR_TOKEN
        )
        assert status == 200 and body == image.data
        # token-file mode: a Keystone token is not enough
        assert (
            answer("GET", f"{agent.url}/v2/cache", openstack_cloud.issue_token("admin"))[0] == 401
        )


def test_unknown_cloud_stops_the_agent_with_one_line(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "imagecache.agent", "--upstream", "glance://",
         "--os-cloud", "nowhere", "--cache-dir", str(tmp_path / "cache")],
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("imagecache-agent:")]
    assert "invalid setting os_cloud" in line and "nowhere" in line


def keystone_knows(cloud: OpenStackCloud, token: str) -> bool:
    status, _, _ = http(
        "GET",
        f"{cloud.keystone_url}/auth/tokens",
        token=cloud.issue_token("admin"),
        headers={"X-Subject-Token": token},
    )
    assert status in (200, 404), status
    return status == 200


def wait_expired(cloud: OpenStackCloud, token: str, *, within: float) -> None:
    """Poll Keystone until it refuses `token` (expired); bounded by `within` seconds."""
    deadline = time.monotonic() + within
    while keystone_knows(cloud, token):
        assert time.monotonic() < deadline, f"token still valid after {within}s"
        time.sleep(2.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tokens_expire_and_the_agent_renews_its_own(
    openstack_cloud_short_tokens: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cloud = openstack_cloud_short_tokens
    log = Transcript()
    small, medium = cloud.image("imagecache-test-small"), cloud.image("imagecache-test-medium")
    with running_agent(cloud, tmp_path_factory.mktemp("renewing-agent"), os_cloud="admin") as agent:
        # Issued once the agent is up: the token lives long enough for the PUT however long the
        # agent took to start.
        client = cloud.issue_token("admin")
        status = http("PUT", f"{agent.url}/v2/cache/{small.id}", token=client)[0]
        log.record("PUT small with a fresh client token", status)
        assert status == 202
        wait_cached(agent, small.id)
        # Issued after the agent's first token: once it has expired, so has the agent's.
        later = cloud.issue_token("admin")

        wait_expired(cloud, client, within=SHORT_TOKEN_EXPIRATION + 60)
        status, doc = answer("GET", f"{agent.url}/v2/cache", client)
        log.record("GET /v2/cache with the same client token, expired", f"{status} {doc}")
        assert status == 401 and doc is not None and doc["code"] == "401 Unauthorized"

        wait_expired(cloud, later, within=SHORT_TOKEN_EXPIRATION + 60)
        fresh = cloud.issue_token("admin")
        status = http("PUT", f"{agent.url}/v2/cache/{medium.id}", token=fresh)[0]
        log.record("PUT medium after the agent's first upstream token expired", status)
        assert status == 202
        report = wait_cached(agent, medium.id)
        log.record("medium", report["state"])
        assert report["size"] == medium.size
        assert "401" not in agent.logs()
