"""End to end, deletion: ``evictOnDelete`` and the finalizer.

Covers: no finalizer without evictOnDelete (deletion is immediate, the image stays); with it,
deletion removes the image from the agent, then the object; deletion completes when the pod is
gone; an unreachable agent is given up after ``evict_timeout`` with a warning event.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    RunningOperator,
    agent_delete,
    agent_has,
    image_bytes,
    image_id,
    phase,
    request_body,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import HttpFileServer


async def _cached_request(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, n: int, *, evict: bool
):  # type: ignore[no-untyped-def]
    image = image_id(80 + n)
    upstream.add(image, image_bytes(f"evict-{n}", 16 * 1024))
    agent = agents.start(2 + n)
    await kube.client.create_pod("default", f"glance-{n}", ip=agent.host)
    body = request_body(f"req-{n}", image, pod=f"glance-{n}", port=agent.port, evictOnDelete=evict)
    await kube.client.create(ICR, body)
    await wait_for_status(kube, f"req-{n}", phase("Cached"))
    return image, agent


async def _gone(kube: Emulator, name: str) -> bool:
    return await kube.client.get(ICR, name, namespace="default") is None


async def test_without_evict_on_delete_no_finalizer_and_the_image_stays(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image, agent = await _cached_request(kube, upstream, agents, 0, evict=False)
    obj = await kube.client.get(ICR, "req-0", namespace="default")
    assert obj is not None and not obj["metadata"].get("finalizers")
    await kube.client.delete(ICR, "req-0", namespace="default")
    assert await _gone(kube, "req-0")
    assert await asyncio.to_thread(agent_has, agent, image)
    # The deleted request's tracking stopped: evicting the image by hand is not undone by a
    # recheck (1 s) within an observation window of three recheck intervals.
    await asyncio.to_thread(agent_delete, agent, image)
    with pytest.raises(AssertionError):
        await wait_until(lambda: agent_has(agent, image), within=3.0, what="a re-PUT")


async def test_evict_on_delete_removes_the_image_then_the_object(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image, agent = await _cached_request(kube, upstream, agents, 1, evict=True)
    obj = await kube.client.get(ICR, "req-1", namespace="default")
    assert obj is not None and obj["metadata"].get("finalizers")
    # kopf's diff-base (a copy of the object in an annotation) is never written: no handler
    # reads a diff (controller.handlers.NoDiffBase).
    annotations = obj["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.endswith("last-handled-configuration")]
    await kube.client.delete(ICR, "req-1", namespace="default")
    await wait_until(lambda: _gone(kube, "req-1"), within=20, what="object deleted")
    assert not await asyncio.to_thread(agent_has, agent, image)


async def test_evict_on_delete_completes_when_the_pod_is_gone(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    await _cached_request(kube, upstream, agents, 2, evict=True)
    await kube.client.delete("pods", "glance-2", namespace="default")
    await kube.client.delete(ICR, "req-2", namespace="default")
    await wait_until(lambda: _gone(kube, "req-2"), within=20, what="object deleted")


async def test_evict_on_delete_gives_up_on_an_unreachable_agent(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    _, agent = await _cached_request(kube, upstream, agents, 3, evict=True)
    agent.kill()
    await kube.client.delete(ICR, "req-3", namespace="default")
    await wait_until(lambda: _gone(kube, "req-3"), within=20, what="object deleted")
    events = await kube.client.events_for("default", "req-3")
    assert any(e["type"] == "Warning" and e["reason"] == "EvictionAbandoned" for e in events)
