"""End to end, what production throws at the operator (issue 9): the API failing writes,
watches dropped, edits by others, agents going away, pods not Ready yet, kopf internals.

Covers: status PATCH failures injected in the emulator (a burst of 422, 503 for a long
stretch, 409) -> every request still ends Cached, the same operator (no restart); watch
streams dropped mid-run (cleanly and abruptly) -> tracking goes on and new requests are seen;
a status edited by someone else is corrected; a Cached request stays Cached through an agent
outage with ``AgentReachable=False`` and one Warning event; a Running pod that is not Ready is
not asked anything until it is; at most one ``GET /v2/cache`` per agent per poll; no private
kopf (or aiohttp) name anywhere in the package.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    RunningOperator,
    create_agent_pod,
    events_until,
    image_bytes,
    image_id,
    phase,
    reasons_end_with,
    request_body,
    start_operator,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import Faults, HttpFileServer

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "imagecache"


def _sample(operator: RunningOperator, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    for metric in operator.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


async def _pod_with_agent(kube: Emulator, agents: AgentPool, index: int, name: str) -> Any:
    agent = agents.start(index)
    await create_agent_pod(kube, name, agent)
    return agent


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"code": 422, "times": 6}, id="burst-of-422"),
        pytest.param({"code": 503, "seconds": 6.0}, id="503-for-a-long-stretch"),
        pytest.param({"code": 409, "times": 6}, id="409"),
    ],
)
async def test_failed_status_writes_never_stop_tracking(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    operator: RunningOperator,
    fault: dict[str, Any],
) -> None:
    images = [image_id(900 + n) for n in range(3)]
    for n, image in enumerate(images):
        upstream.add(image, image_bytes(f"fault-{n}", 256 * 1024))
        upstream.faults[image] = Faults(stall_after=64 * 1024, stall_seconds=30)
    await _pod_with_agent(kube, agents, 2, "glance-0")
    injected = kube.fail_writes(
        verb="patch", resource="imagecacherequests", subresource="status", **fault
    )
    for n, image in enumerate(images):
        await kube.client.create(ICR, request_body(f"req-{n}", image, pod="glance-0"))
    await wait_until(lambda: injected.hits >= 3, within=30, what="writes failed")
    upstream.release_stalls()
    for n in range(len(images)):
        await wait_for_status(kube, f"req-{n}", phase("Cached"), within=40)
    assert operator.thread.is_alive() and not operator.errors
    failed = [w for w in kube.writes if w.subresource == "status" and w.code == fault["code"]]
    assert len(failed) == injected.hits >= 3
    assert _sample(
        operator,
        "imagecache_operator_api_writes_total",
        kind="status",
        outcome=str(fault["code"]),
    ) == float(injected.hits)


@pytest.mark.parametrize("abrupt", [False, True], ids=["clean", "abrupt"])
async def test_dropped_watches_do_not_stop_tracking(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    operator: RunningOperator,
    abrupt: bool,
) -> None:
    first, second = image_id(910), image_id(911)
    upstream.add(first, image_bytes("watch-1", 256 * 1024))
    upstream.add(second, image_bytes("watch-2", 32 * 1024))
    upstream.faults[first] = Faults(stall_after=64 * 1024, stall_seconds=30)
    await _pod_with_agent(kube, agents, 2, "glance-0")
    await kube.client.create(ICR, request_body("req-1", first, pod="glance-0"))
    await wait_for_status(kube, "req-1", phase("Caching"))
    assert kube.drop_watches(abrupt=abrupt) >= 2  # pods and requests at least
    await kube.client.create(ICR, request_body("req-2", second, pod="glance-0"))
    upstream.release_stalls()
    await wait_for_status(kube, "req-1", phase("Cached"), within=40)
    await wait_for_status(kube, "req-2", phase("Cached"), within=40)


async def test_a_status_edited_by_someone_else_is_corrected(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(920)
    upstream.add(image, image_bytes("edit", 32 * 1024))
    await _pod_with_agent(kube, agents, 2, "glance-0")
    await kube.client.create(ICR, request_body("req", image, pod="glance-0"))
    await wait_for_status(kube, "req", phase("Cached"))
    await kube.client.patch(
        ICR,
        "req",
        {"status": {"phase": "Failed", "reason": "EditedByHand", "progress": None}},
        namespace="default",
        subresource="status",
    )
    status = await wait_for_status(kube, "req", phase("Cached", "Cached"))
    assert status["progress"]["percent"] == 100


async def test_cached_survives_an_agent_outage(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(930)
    upstream.add(image, image_bytes("outage", 32 * 1024))
    agent = await _pod_with_agent(kube, agents, 2, "glance-0")
    await kube.client.create(ICR, request_body("req", image, pod="glance-0"))
    await wait_for_status(kube, "req", phase("Cached"))
    seen: list[dict[str, Any]] = []
    agent.kill()
    down = await wait_for_status(
        kube,
        "req",
        lambda s: _condition(s, "AgentReachable").get("status") == "False",
        seen=seen,
    )
    assert (down["phase"], down["reason"]) == ("Cached", "Cached")
    assert _condition(down, "Cached")["status"] == "True"
    assert _condition(down, "AgentReachable")["reason"] == "AgentUnreachable"
    await asyncio.to_thread(agent.start)
    await wait_for_status(
        kube,
        "req",
        lambda s: _condition(s, "AgentReachable").get("status") == "True",
        seen=seen,
    )
    assert {s.get("phase") for s in seen} == {"Cached"}
    events = await kube.client.events_for("default", "req")
    warnings = [e["reason"] for e in events if e["type"] == "Warning"]
    assert warnings == ["AgentUnreachable"]


async def test_a_pod_that_is_not_ready_is_not_asked(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(940)
    upstream.add(image, image_bytes("ready", 32 * 1024))
    agent = agents.start(2)
    await create_agent_pod(kube, "glance-0", agent, ready=False)
    await kube.client.create(ICR, request_body("req", image, pod="glance-0"))
    await wait_for_status(kube, "req", phase("Pending", "PodNotReady"))
    ticks = _sample(operator, "imagecache_operator_loop_ticks_total")
    await wait_until(
        lambda: _sample(operator, "imagecache_operator_loop_ticks_total") >= ticks + 3,
        what="three more ticks",
    )
    assert _sample(operator, "imagecache_operator_agent_requests_total", method="GET") == 0
    assert _sample(operator, "imagecache_operator_agent_requests_total", method="PUT") == 0
    await kube.client.patch(
        "pods",
        "glance-0",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        namespace="default",
        subresource="status",
    )
    await wait_for_status(kube, "req", phase("Cached"))
    events = await events_until(kube, "req", reasons_end_with("Cached"))
    assert not [e for e in events if e["type"] == "Warning"]


async def test_at_most_one_get_per_agent_per_poll(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, token_file: Path
) -> None:
    images = [image_id(950 + n) for n in range(12)]
    for n, image in enumerate(images):
        upstream.add(image, image_bytes(f"poll-{n}", 128 * 1024))
    await _pod_with_agent(kube, agents, 2, "glance-0")
    await _pod_with_agent(kube, agents, 3, "glance-1")
    operator = await start_operator(kube, token_file=token_file)
    try:
        for n, image in enumerate(images):
            pod = f"glance-{n % 2}"
            await kube.client.create(ICR, request_body(f"req-{n}", image, pod=pod))
        for n in range(len(images)):
            await wait_for_status(kube, f"req-{n}", phase("Cached"), within=40)
        gets = _sample(operator, "imagecache_operator_agent_requests_total", method="GET")
        ticks = _sample(operator, "imagecache_operator_loop_ticks_total")
        assert 2 <= gets <= 2 * ticks, (gets, ticks)
    finally:
        await operator.stop()


KOPF_PRIVATE = re.compile(r"\bkopf(\.\w+)*\._\w")
"""``kopf._x``, ``kopf.a._x``, ``from kopf._x import``: wider than the issue's pattern."""


def _private_attributes(source: str) -> list[str]:
    """``x._name`` where x is not self/cls (a private name of another object or module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_no_private_kopf_or_aiohttp_name_in_the_package() -> None:
    offenders: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE)
        offenders += [f"{where}: {m.group(0)}" for m in KOPF_PRIVATE.finditer(text)]
        offenders += [f"{where}: {a}" for a in _private_attributes(text)]
    assert offenders == []


def test_the_private_name_check_catches_what_the_old_operator_did() -> None:
    old = "spawning = registry._spawning\nsetter = getattr(stopped, '_setter')\nx = s._server\n"
    assert _private_attributes(old) == ["registry._spawning (line 1)", "s._server (line 3)"]
    for text in ("from kopf._core import x", "kopf._cogs.y", "kopf.on._z", "kopf.a.b._c"):
        assert KOPF_PRIVATE.search(text), text
    assert not KOPF_PRIVATE.search("kopf.on.delete(); kopf.index()")
