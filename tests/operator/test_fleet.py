"""End-to-end: the operator at fleet scale (issue 14), against the emulator and real agents.

Covers: a watch gap that ends in ``410 Gone`` while a request and a pod are deleted (kopf
relists and keeps both in its index): the request's evicted image is never re-PUT (a recheck
confirms the request with a GET first) and the pod stops being a target (the resync); 100
agents that accept connections and never answer: ``/healthz`` stays 200 and the loop keeps
ticking; a malformed agent listing (``{"cached_images": [1]}``) fails that agent's request
(``AgentReachable=False``, ``AgentInvalidAnswer``) while another request goes on to Cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    PORT_ANNOTATION,
    AgentPool,
    ListingServer,
    agent_delete,
    agent_has,
    image_bytes,
    image_id,
    phase,
    request_body,
    start_operator,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import HttpFileServer


def _condition(status: dict[str, object], kind: str) -> dict[str, object]:
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list)
    return next(c for c in conditions if c.get("type") == kind)


async def test_objects_deleted_during_a_watch_gap_are_forgotten(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, token_file: Path
) -> None:
    old, new = image_id(141), image_id(142)
    for image in (old, new):
        upstream.add(image, image_bytes(image, 16 * 1024))
    first, second = agents.start(2), agents.start(3)
    labels = {"app": "glance"}
    await kube.client.create_pod("default", "glance-0", ip=first.host, labels=labels)
    await kube.client.create_pod("default", "glance-1", ip=second.host, labels=labels)
    operator = await start_operator(kube, token_file=token_file, resync_interval=2.0)
    try:
        await kube.client.create(ICR, request_body("old", old, pod="glance-0", port=first.port))
        selecting = request_body("fleet", new, selector={"matchLabels": labels}, port=first.port)
        await kube.client.create(ICR, selecting)
        await wait_for_status(kube, "old", phase("Cached"))
        await wait_for_status(
            kube, "fleet", lambda s: (s.get("summary") or {}).get("total") == 2, within=30
        )
        assert kube.watch_gap(
            deleting=[("imagecacherequests", "default", "old"), ("pods", "default", "glance-1")]
        )
        assert agent_delete(first, old) == 204  # evicted while nobody owns it
        # The pod is gone from the targets (kopf's relist kept it; the resync did not).
        await wait_for_status(
            kube, "fleet", lambda s: (s.get("summary") or {}).get("total") == 1, within=30
        )

        def confirmed() -> bool:
            return any(
                r.method == "GET" and str(r.url.path).endswith("/imagecacherequests/old")
                for r in kube.requests
            )

        await wait_until(confirmed, within=20, what="a recheck asks whether 'old' still exists")
        deadline = time.monotonic() + 3.0  # several recheck intervals
        while time.monotonic() < deadline:
            assert not agent_has(first, old), "the image of a deleted request was re-PUT"
            await asyncio.sleep(0.2)
    finally:
        await operator.stop()


@contextlib.contextmanager
def silent_listeners(count: int) -> Iterator[list[tuple[str, int]]]:
    """`count` sockets on 127.0.3.x that accept connections (the kernel's backlog) and never
    answer."""
    sockets = []
    try:
        for n in range(1, count + 1):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((f"127.0.3.{n}", 0))
            listener.listen(64)
            sockets.append(listener)
        yield [(s.getsockname()[0], s.getsockname()[1]) for s in sockets]
    finally:
        for listener in sockets:
            listener.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_healthz_stays_200_with_100_agents_that_never_answer(
    kube: Emulator, token_file: Path
) -> None:
    port = free_port()
    with silent_listeners(100) as listeners:
        for n, (host, agent_port) in enumerate(listeners):
            await kube.client.create_pod(
                "default",
                f"hung-{n}",
                ip=host,
                labels={"app": "hung"},
                annotations={PORT_ANNOTATION: str(agent_port)},
            )
        operator = await start_operator(
            kube, token_file=token_file, metrics_port=port, request_timeout=30.0
        )
        try:
            body = request_body("hung", image_id(143), selector={"matchLabels": {"app": "hung"}})
            await kube.client.create(ICR, body)
            registry = operator.metrics.registry

            def ticks() -> float:
                return registry.get_sample_value("imagecache_operator_loop_ticks_total") or 0.0

            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                url = f"http://127.0.0.1:{port}/healthz"
                started = ticks()
                deadline = time.monotonic() + 12.0  # past the 10 s a stuck loop is allowed
                while time.monotonic() < deadline:
                    async with session.get(url) as response:
                        assert response.status == 200, await response.text()
                    await asyncio.sleep(0.5)
            assert ticks() - started >= 20  # it kept ticking all along
        finally:
            await operator.stop()


async def test_a_malformed_listing_fails_that_agent_only(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, token_file: Path
) -> None:
    good_image = image_id(144)
    upstream.add(good_image, image_bytes("good", 16 * 1024))
    good = agents.start(2)

    async def listing(_: web.Request) -> web.Response:
        return web.json_response({"cached_images": [1]})

    await kube.client.create_pod("default", "good-0", ip=good.host)
    await kube.client.create_pod("default", "bad-0", ip="127.0.4.1")
    async with ListingServer(listing, host="127.0.4.1") as bad:
        operator = await start_operator(kube, token_file=token_file)
        try:
            await kube.client.create(
                ICR, request_body("bad", image_id(145), pod="bad-0", port=bad.port)
            )
            await kube.client.create(
                ICR, request_body("good", good_image, pod="good-0", port=good.port)
            )
            status = await wait_for_status(
                kube,
                "bad",
                lambda s: (
                    bool(s.get("conditions"))
                    and _condition(s, "AgentReachable").get("reason") == "AgentInvalidAnswer"
                ),
            )
            assert "cached_images[0]" in str(_condition(status, "AgentReachable")["message"])
            await wait_for_status(kube, "good", phase("Cached"))
        finally:
            await operator.stop()
