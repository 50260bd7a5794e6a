"""End to end, single-pod form: Queued -> Caching (progress) -> Cached, byte-identical.

Covers: the happy path with visible progress and events; several requests on one agent sharing
one ``GET /v2/cache`` per poll interval; the pod not found / not ready, then created; an unknown
image (Failed/ImageNotFound); the agent down then up (AgentUnreachable); a wrong token
(Unauthorized) healed by fixing the token file; the image removed from the agent (Recaching);
the pod replaced (new uid and IP) and the image re-cached on the new one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    PORT_ANNOTATION,
    TOKEN,
    AgentPool,
    RunningOperator,
    agent_delete,
    agent_get,
    agent_has,
    cached_file,
    create_agent_pod,
    events_until,
    has_event,
    image_bytes,
    image_id,
    phase,
    reasons_end_with,
    request_body,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import Faults, HttpFileServer


async def test_queued_caching_cached_with_progress(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(1)
    data = image_bytes("one", 512 * 1024)
    upstream.add(image, data)
    upstream.faults[image] = Faults(stall_after=200 * 1024, stall_seconds=20)
    agent = agents.start(2)
    await create_agent_pod(kube, "glance-0", agent)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0"))

    seen: list[dict] = []
    caching = await wait_for_status(
        kube, "req", lambda s: s.get("progress", {}).get("bytes", 0) > 0, seen=seen
    )
    assert caching["phase"] == "Caching"
    assert caching["reason"] == "Downloading"
    assert caching["progress"]["totalBytes"] == len(data)
    assert 0 < caching["progress"]["bytes"] < len(data)
    assert 0 < caching["progress"]["percent"] < 100
    assert caching["target"]["pod"] == "glance-0" and caching["target"]["podIP"] == agent.host
    upstream.release_stalls()

    cached = await wait_for_status(kube, "req", phase("Cached"), seen=seen)
    assert cached["progress"]["percent"] == 100
    assert cached["conditions"][0]["type"] == "Cached"
    assert cached["conditions"][0]["status"] == "True"
    assert cached["observedGeneration"] == 1
    assert {"queuedAt", "startedAt", "cachedAt"} <= set(cached)
    phases = [s.get("phase") for s in seen if s.get("phase")]
    assert phases.index("Caching") < phases.index("Cached")
    assert await asyncio.to_thread(cached_file, agent, image) == data

    events = await events_until(kube, "req", reasons_end_with("Cached"))
    reasons = [e["reason"] for e in events]
    assert "Caching" in reasons and reasons[-1] == "Cached"
    object_patches = [
        w
        for w in kube.writes
        if w.resource == "imagecacherequests" and w.subresource is None and w.verb != "create"
    ]
    assert object_patches == []  # only status: no kopf annotation, no finalizer without evict


def _gets(operator: RunningOperator) -> float:
    total = 0.0
    for metric in operator.metrics.agent_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("method") == "GET":
                total += sample.value
    return total


async def test_several_requests_share_one_poll_per_interval(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    agent = agents.start(2)
    images = [image_id(10 + n) for n in range(6)]
    for n, image in enumerate(images):
        upstream.add(image, image_bytes(f"many-{n}", 64 * 1024))
    await create_agent_pod(kube, "glance-0", agent)
    started = time.monotonic()
    for n, image in enumerate(images):
        await kube.client.create(ICR, request_body(f"req-{n}", image, pod="glance-0"))
    for n in range(len(images)):
        await wait_for_status(kube, f"req-{n}", phase("Cached"))
    elapsed = time.monotonic() - started
    polls = _gets(operator)
    # One shared GET per 0.2 s poll interval at most (plus one in flight at the start).
    assert 1 <= polls <= elapsed / 0.2 + 1, (polls, elapsed)
    listing = await asyncio.to_thread(agent_get, agent, "/v2/cache")
    assert {e["image_id"] for e in listing["cached_images"]} == set(images)


async def test_pod_not_found_then_created(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(20)
    upstream.add(image, image_bytes("late", 32 * 1024))
    agent = agents.start(2)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0", port=agent.port))
    pending = await wait_for_status(kube, "req", phase("Pending", "PodNotFound"))
    assert pending["target"] == {"pod": "glance-0"}
    await kube.client.create_pod("default", "glance-0", ip=None, phase="Pending")
    await wait_for_status(kube, "req", phase("Pending", "PodNotReady"))
    await kube.client.delete("pods", "glance-0", namespace="default")
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    cached = await wait_for_status(kube, "req", phase("Cached"))
    assert cached["target"]["podIP"] == agent.host
    events = await events_until(kube, "req", reasons_end_with("Cached"))
    reasons = [e["reason"] for e in events]
    assert "PodNotFound" in reasons and "PodNotReady" in reasons and reasons[-1] == "Cached"
    warnings = [e for e in await kube.client.events_for("default", "req") if e["type"] == "Warning"]
    assert {e["reason"] for e in warnings} >= {"PodNotFound"}


async def test_unknown_image_fails(
    kube: Emulator, agents: AgentPool, operator: RunningOperator
) -> None:
    agent = agents.start(2)
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    await kube.client.create(
        ICR, request_body("req", image_id(99), pod="glance-0", port=agent.port)
    )
    failed = await wait_for_status(kube, "req", phase("Failed", "ImageNotFound"))
    assert failed["conditions"][0]["status"] == "False"
    assert failed["conditions"][0]["reason"] == "ImageNotFound"
    await events_until(kube, "req", has_event("Warning", "Failed"))


async def test_agent_down_then_up(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(30)
    data = image_bytes("down", 48 * 1024)
    upstream.add(image, data)
    agent = agents.start(2)
    agent.kill()
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0", port=agent.port))
    await wait_for_status(kube, "req", phase("Pending", "AgentUnreachable"))
    await asyncio.to_thread(agent.start)
    await wait_for_status(kube, "req", phase("Cached"))
    assert await asyncio.to_thread(cached_file, agent, image) == data
    reasons = [e["reason"] for e in await kube.client.events_for("default", "req")]
    assert "AgentUnreachable" in reasons


async def test_wrong_token_heals_when_the_token_file_is_fixed(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    token_file: Path,
    operator: RunningOperator,
) -> None:
    image = image_id(40)
    upstream.add(image, image_bytes("token", 16 * 1024))
    agent = agents.start(2)
    await asyncio.to_thread(token_file.write_text, "a-wrong-token\n")
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0", port=agent.port))
    await wait_for_status(kube, "req", phase("Failed", "Unauthorized"))
    await events_until(kube, "req", has_event("Warning", "Unauthorized"))
    await asyncio.to_thread(token_file.write_text, TOKEN + "\n")
    await wait_for_status(kube, "req", phase("Cached"))


async def test_image_removed_from_agent_is_recached(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(50)
    upstream.add(image, image_bytes("recache", 32 * 1024))
    agent = agents.start(2)
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0", port=agent.port))
    first = await wait_for_status(kube, "req", phase("Cached"))
    await asyncio.to_thread(agent_delete, agent, image)
    reasons: list[str] = []

    async def recached() -> bool:
        reasons[:] = [e["reason"] for e in await kube.client.events_for("default", "req")]
        return "Recaching" in reasons

    await wait_until(recached, within=20, what="a Recaching event")
    await wait_for_status(
        kube, "req", lambda s: s.get("phase") == "Cached" and "Recaching" in reasons
    )
    assert await asyncio.to_thread(agent_has, agent, image)
    assert first["cachedAt"]
    assert reasons.index("Recaching") > reasons.index("Cached")


async def test_replaced_pod_is_recached_on_the_new_one(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(60)
    data = image_bytes("replace", 32 * 1024)
    upstream.add(image, data)
    old, new = agents.start(2), agents.start(3)
    await create_agent_pod(kube, "glance-0", old)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0"))
    before = await wait_for_status(kube, "req", phase("Cached"))
    await kube.client.replace_pod(
        "default", "glance-0", ip=new.host, annotations={PORT_ANNOTATION: str(new.port)}
    )
    after = await wait_for_status(
        kube, "req", lambda s: s.get("phase") == "Cached" and s["target"]["podIP"] == new.host
    )
    assert after["target"]["podUID"] != before["target"]["podUID"]
    assert await asyncio.to_thread(cached_file, new, image) == data
