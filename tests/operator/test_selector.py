"""End to end, selector form: fan-out over matching pods, pods appearing and going away.

Covers: three matching pods (and one that does not match) all Cached with the summary and
per-target entries; a fourth pod created later is added and cached; a pod that goes away is
dropped; aggregation to Failed when one target fails and the others are done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    RunningOperator,
    agent_has,
    create_agent_pod,
    image_bytes,
    image_id,
    request_body,
    wait_for_status,
)
from tests.support.upstreams import HttpFileServer

LABELS = {"app": "glance-api"}


def _all_cached(total: int):  # type: ignore[no-untyped-def]
    return lambda s: s.get("phase") == "Cached" and s.get("summary", {}).get("total") == total


async def test_selector_fans_out_and_follows_pods(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(70)
    upstream.add(image, image_bytes("selector", 32 * 1024))
    pool = [agents.start(n) for n in (2, 3, 4, 5, 6)]
    for n, agent in enumerate(pool[:3]):
        await create_agent_pod(kube, f"glance-{n}", agent, labels=LABELS)
    other = pool[4]
    await create_agent_pod(kube, "other", other, labels={"app": "nova"})
    await kube.client.create(ICR, request_body("req", image, selector={"matchLabels": LABELS}))
    status = await wait_for_status(kube, "req", _all_cached(3))
    assert status["summary"] == {"total": 3, "queued": 0, "caching": 0, "cached": 3, "failed": 0}
    assert [t["pod"] for t in status["targets"]] == ["glance-0", "glance-1", "glance-2"]
    assert all(t["phase"] == "Cached" and t["podIP"] for t in status["targets"])
    assert status["progress"]["percent"] == 100
    for agent in pool[:3]:
        assert await asyncio.to_thread(agent_has, agent, image)
    assert not await asyncio.to_thread(agent_has, other, image)

    late = pool[3]
    await create_agent_pod(kube, "glance-3", late, labels=LABELS)
    status = await wait_for_status(kube, "req", _all_cached(4))
    assert await asyncio.to_thread(agent_has, late, image)

    await kube.client.delete("pods", "glance-0", namespace="default")
    status = await wait_for_status(kube, "req", _all_cached(3))
    assert "glance-0" not in [t["pod"] for t in status["targets"]]


async def test_selector_fails_when_one_target_fails_and_the_rest_are_done(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    operator: RunningOperator,
    tmp_path: Path,
) -> None:
    image = image_id(71)
    upstream.add(image, image_bytes("mixed", 16 * 1024))
    good = agents.start(2)
    await create_agent_pod(kube, "glance-0", good, labels=LABELS)
    # A second "agent" whose upstream is empty: every image is unknown there.
    empty_dir = tmp_path / "empty-upstream"
    empty_dir.mkdir()
    empty = agents.start(3, upstream=f"file://{empty_dir}")
    await create_agent_pod(kube, "glance-1", empty, labels=LABELS)
    await kube.client.create(ICR, request_body("req", image, selector={"matchLabels": LABELS}))
    status = await wait_for_status(kube, "req", lambda s: s.get("phase") == "Failed")
    assert status["summary"]["cached"] == 1 and status["summary"]["failed"] == 1
    assert status["reason"] == "ImageNotFound"
