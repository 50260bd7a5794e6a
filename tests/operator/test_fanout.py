"""End to end, fleet fill (issue 15): a selector request fans out from peer to peer.

Covers: a selector over 8 real agents with ``fanout: {width: 2}`` reads the upstream once (the
upstream counts the byte reads it serves), every target ends Cached with the upstream's bytes,
each target's status names the source it filled from (one ``upstream``, the others a peer that
is another target's agent), and no peer ever served more than 2 targets at once (checked on
every status seen); ``fanout: {enabled: false}`` makes every target read the upstream; with
per-pod credentials (agents in ``auth kubernetes``) the peers accept the operator's peer-read
tokens and the upstream is still read once.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    HeaderRecorder,
    RunningOperator,
    cached_file,
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

LABELS = {"app": "glance-api"}
PODS = 8


async def _fleet(kube: Emulator, agents: AgentPool) -> list[Any]:
    pool = [
        agents.start(n, extra_args=["--peer-networks", "127.0.0.0/8"]) for n in range(2, 2 + PODS)
    ]
    for n, agent in enumerate(pool):
        await create_agent_pod(kube, f"glance-{n}", agent, labels=LABELS)
    return pool


def _all_cached(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Cached" and status.get("summary", {}).get("total") == PODS


async def test_a_selector_over_8_pods_with_width_2_reads_the_upstream_once(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(150)
    data = image_bytes("fanout", 2 * 2**20)
    upstream.add(image, data)
    pool = await _fleet(kube, agents)
    endpoints = {agent.url for agent in pool}
    spec = {"fanout": {"width": 2}}
    await kube.client.create(
        ICR, request_body("fleet", image, selector={"matchLabels": LABELS}, **spec)
    )
    seen: list[dict[str, Any]] = []
    status = await wait_for_status(kube, "fleet", _all_cached, within=60, seen=seen)

    assert upstream.count("GET", image) == 1
    sources = Counter(t["source"] for t in status["targets"])
    assert sources["upstream"] == 1, status["targets"]
    assert set(sources) - {"upstream"} <= endpoints
    own = {agent.host: agent.url for agent in pool}
    for target in status["targets"]:
        assert target["source"] != own[target["podIP"]]  # never its own agent
    for snapshot in seen:
        filling = Counter(
            t.get("source")
            for t in snapshot.get("targets") or []
            if t.get("phase") in ("Queued", "Caching") and t.get("source") != "upstream"
        )
        assert max(filling.values(), default=0) <= 2, snapshot["targets"]
    waiting = [
        t for s in seen for t in s.get("targets") or [] if t.get("reason") == "WaitingForPeer"
    ]
    assert waiting, "targets beyond the seed waited for a peer"
    for agent in pool:
        assert await asyncio.to_thread(cached_file, agent, image) == data


async def test_fanout_disabled_reads_the_upstream_from_every_target(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(151)
    upstream.add(image, image_bytes("no-fanout", 256 * 1024))
    await _fleet(kube, agents)
    spec = {"fanout": {"enabled": False}}
    await kube.client.create(
        ICR, request_body("plain", image, selector={"matchLabels": LABELS}, **spec)
    )
    status = await wait_for_status(kube, "plain", _all_cached, within=60)
    assert upstream.count("GET", image) == PODS
    assert {t["source"] for t in status["targets"]} == {"upstream"}


async def _per_pod_agents(
    kube: Emulator, tmp_path: Path, upstream: HttpFileServer, count: int
) -> list[AgentProcess]:
    """Agents in ``auth kubernetes`` (TokenReview against the emulator), one pod each."""
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}}
    await kube.client.create("serviceaccounts", account, namespace="default")
    pool = []
    for n in range(count):
        host = f"127.0.0.{2 + n}"
        port = free_port(host)
        pod = await kube.client.create_pod(
            "default",
            f"glance-{n}",
            ip=host,
            labels=LABELS,
            annotations={"imagecache.dev/port": str(port)},
        )
        agent = AgentProcess(
            cache_dir=tmp_path / f"agent-{n}" / "cache",
            upstream=upstream.upstream,
            host=host,
            port=port,
            extra_args=[
                *("--auth", "kubernetes", "--pod-uid", pod["metadata"]["uid"]),
                *("--operator-service-account", "system:serviceaccount:default:op"),
                *("--kubeconfig", str(kube.kubeconfig_for("agent-reviewer"))),
                *("--peer-networks", "127.0.0.0/8"),
            ],
        )
        agent.cache_dir.parent.mkdir(parents=True)
        pool.append(agent)
        agent.start()
    return pool


PER_POD = {"agent_auth": "kubernetes", "service_account": "op"}


async def test_fanout_with_per_pod_credentials_uses_peer_read_tokens(
    kube: Emulator, tmp_path: Path, upstream: HttpFileServer
) -> None:
    """``agent_auth kubernetes``: a target receives, for its peer, a token of the peer's *peer
    audience*, and the peer accepts it: the upstream is read once."""
    image = image_id(152)
    upstream.add(image, image_bytes("per-pod-fanout", 1024 * 1024))
    pool = await _per_pod_agents(kube, tmp_path, upstream, 3)
    running = await start_operator(
        kube, token_file=None, service_account_namespace="default", **PER_POD
    )
    try:
        await kube.client.create(ICR, request_body("pods", image, selector={"matchLabels": LABELS}))
        status = await wait_for_status(
            kube,
            "pods",
            lambda s: s.get("phase") == "Cached" and s["summary"]["total"] == 3,
            within=60,
        )
    finally:
        await running.stop()
        for agent in pool:
            agent.kill()
    assert upstream.count("GET", image) == 1
    sources = [t["source"] for t in status["targets"]]
    assert sources.count("upstream") == 1, sources
    assert set(sources) - {"upstream"} <= {agent.url for agent in pool}, sources


def _peer_tokens(thief: HeaderRecorder) -> list[tuple[str, str]]:
    """(peer URL, token) of every peer-read token a matched pod was sent."""
    return [
        (got["X-Image-Cache-Source"], got["X-Image-Cache-Source-Token"])
        for got in thief.headers
        if "X-Image-Cache-Source-Token" in got
    ]


def _call(method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), b""


async def test_a_stolen_peer_token_reads_that_peer_s_cache_and_nothing_else(
    kube: Emulator, tmp_path: Path, upstream: HttpFileServer
) -> None:
    image = image_id(153)
    data = image_bytes("stolen-peer-token", 256 * 1024)
    upstream.add(image, data)
    pool = await _per_pod_agents(kube, tmp_path, upstream, 2)
    async with HeaderRecorder("127.0.0.9") as thief:
        await create_agent_pod(kube, "thief", thief, labels=LABELS)
        running = await start_operator(
            kube, token_file=None, service_account_namespace="default", **PER_POD
        )
        try:
            await kube.client.create(
                ICR, request_body("pods", image, selector={"matchLabels": LABELS})
            )
            await wait_until(lambda: _peer_tokens(thief), within=60, what="a peer token sent")
        finally:
            await running.stop()
    peer_url, token = _peer_tokens(thief)[-1]
    peer = next(agent for agent in pool if agent.url == peer_url)
    other = next(agent for agent in pool if agent is not peer)
    read = {"X-Auth-Token": token, "X-Image-Cache-Peer-Read": "1"}
    try:
        file = f"/v2/images/{image}/file"
        assert await asyncio.to_thread(_call, "GET", peer.url + file, read) == (200, data)
        for method, url in [
            ("GET", peer.url + file),  # not marked as a peer read
            ("PUT", f"{peer.url}/v2/cache/{image}"),
            ("DELETE", f"{peer.url}/v2/cache/{image}"),
            ("GET", f"{peer.url}/v2/cache"),
            ("GET", other.url + file),  # another agent
        ]:
            headers = (
                read if "file" in url and url.startswith(other.url) else {"X-Auth-Token": token}
            )
            status, _ = await asyncio.to_thread(_call, method, url, headers)
            assert status == 401, (method, url)
    finally:
        for agent in pool:
            agent.kill()
