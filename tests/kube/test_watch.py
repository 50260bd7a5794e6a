"""Watch streams, as kopf and kubectl consume them.

Covers: a watch from a list's resourceVersion sees every later change exactly once and nothing
earlier; a watch without one starts with ADDED for current objects; DELETED on deletion;
namespace scoping; label selectors turning changes into ADDED/DELETED as objects enter or
leave the selection; timeoutSeconds ends the stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.kube.client import ICR
from tests.kube.emulator import Emulator

PATH = "/apis/imagecache.dev/v1alpha1/namespaces/default/imagecacherequests"
DEADLINE = 10.0


async def collect(
    kube: Emulator, path: str, params: dict[str, str], count: int
) -> list[tuple[str, str, str]]:
    """Read `count` events (type, name, rv) from a watch, within a bounded time."""
    events: list[tuple[str, str, str]] = []
    url = kube.url + path
    async with (
        aiohttp.ClientSession(headers=kube.auth_headers) as session,
        session.get(url, params={"watch": "true", **params}) as response,
    ):
        assert response.status == 200

        async def read() -> None:
            async for line in response.content:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    meta = event["object"]["metadata"]
                    events.append((event["type"], meta["name"], meta["resourceVersion"]))
                    if len(events) >= count:
                        return

        await asyncio.wait_for(read(), DEADLINE)
    return events


def spec(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"image": "img", "pod": "p"},
    }


async def test_watch_from_resource_version_has_no_duplicates(kube: Emulator) -> None:
    await kube.client.create(ICR, spec("before"), namespace="default")
    _, listing = await kube.client.request("GET", PATH)
    since = listing["metadata"]["resourceVersion"]
    watching = asyncio.create_task(collect(kube, PATH, {"resourceVersion": since}, 4))
    await kube.client.create(ICR, spec("a"), namespace="default")
    await kube.client.patch(
        ICR, "a", {"status": {"phase": "Queued"}}, namespace="default", subresource="status"
    )
    await kube.client.patch(ICR, "a", {"spec": {"port": 1}}, namespace="default")
    await kube.client.delete(ICR, "a", namespace="default")
    events = await watching
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [int(rv) for _, _, rv in events]
    assert versions == sorted(set(versions)) and versions[0] > int(since)


async def test_watch_without_version_starts_with_current_objects(kube: Emulator) -> None:
    await kube.client.create(ICR, spec("x"), namespace="default")
    await kube.client.create_namespace("other")
    await kube.client.create(ICR, spec("y"), namespace="other")
    events = await collect(kube, PATH, {}, 1)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "x")]
    everywhere = await collect(kube, "/apis/imagecache.dev/v1alpha1/imagecacherequests", {}, 2)
    assert sorted(n for _, n, _ in everywhere) == ["x", "y"]


async def test_selector_watch_sees_objects_enter_and_leave(kube: Emulator) -> None:
    await kube.client.create(ICR, spec("a"), namespace="default")
    _, listing = await kube.client.request("GET", PATH)
    params = {
        "resourceVersion": listing["metadata"]["resourceVersion"],
        "labelSelector": "app=glance",
    }
    watching = asyncio.create_task(collect(kube, PATH, params, 3))
    await kube.client.patch(
        ICR, "a", {"metadata": {"labels": {"other": "1"}}}, namespace="default"
    )  # not seen
    await kube.client.patch(
        ICR, "a", {"metadata": {"labels": {"app": "glance"}}}, namespace="default"
    )
    await kube.client.patch(
        ICR, "a", {"metadata": {"labels": {"app": "glance", "x": "1"}}}, namespace="default"
    )
    await kube.client.patch(
        ICR, "a", {"metadata": {"labels": {"app": "nova"}}}, namespace="default"
    )
    events = await watching
    assert [t for t, _, _ in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_timeout_seconds_ends_the_stream(kube: Emulator) -> None:
    async with (
        aiohttp.ClientSession(headers=kube.auth_headers) as session,
        session.get(kube.url + PATH, params={"watch": "true", "timeoutSeconds": "1"}) as response,
    ):
        body = await asyncio.wait_for(response.read(), DEADLINE)
    assert body.strip() == b""
