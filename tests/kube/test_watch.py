"""Watch streams, as the official ``kubernetes`` client (and kopf, kubectl) consume them.

Covers: a watch from a list's resourceVersion sees every later change exactly once and nothing
earlier; a watch without one starts with ADDED for current objects; DELETED on deletion;
namespace scoping; label selectors turning changes into ADDED/DELETED as objects enter or
leave the selection; timeoutSeconds ends the stream; every watcher of a change is sent the same
bytes, encoded once for all of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from tests.kube.client import ICR, resource_path
from tests.kube.emulator import Emulator
from tests.kube.official import (
    GROUP,
    NS,
    PLURAL,
    VERSION,
    create_icr,
    delete_icr,
    icr,
    list_icrs,
    patch_icr,
)

DEADLINE = 10.0
Event = tuple[str, str, str]  # type, name, resourceVersion


class Collector:
    """Reads `count` events of one watch in a thread (the official client blocks)."""

    def __init__(self, api: ApiClient, count: int, namespace: str | None = NS, **params: Any):
        self.events: list[Event] = []
        self._watch = kubernetes.watch.Watch()
        objects = CustomObjectsApi(api)
        if namespace is None:
            self._args: tuple[Any, ...] = (objects.list_cluster_custom_object, GROUP, VERSION)
        else:
            self._args = (objects.list_namespaced_custom_object, GROUP, VERSION, namespace)
        self._count, self._params = count, params
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for event in self._watch.stream(*self._args, PLURAL, timeout_seconds=30, **self._params):
            meta = event["object"]["metadata"]
            self.events.append((event["type"], meta["name"], meta["resourceVersion"]))
            if len(self.events) >= self._count:
                self._watch.stop()
                return

    async def start(self, kube: Emulator) -> Collector:
        self._thread.start()
        await wait_for(
            lambda: kube.open_watches >= 1 or not self._thread.is_alive(), "the watch is open"
        )
        return self

    async def result(self) -> list[Event]:
        await asyncio.to_thread(self._thread.join, DEADLINE)
        assert not self._thread.is_alive(), f"only {self.events} within {DEADLINE}s"
        return self.events


async def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}"
        await asyncio.sleep(0.02)


def list_version(api: ApiClient) -> str:
    listing = CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    return str(listing["metadata"]["resourceVersion"])


async def test_watch_from_resource_version_has_no_duplicates(
    kube: Emulator, k8s: ApiClient
) -> None:
    create_icr(k8s, icr("before"))
    since = list_version(k8s)
    watching = await Collector(k8s, 4, resource_version=since).start(kube)
    create_icr(k8s, icr("a"))
    patch_icr(k8s, "a", {"status": {"phase": "Queued"}}, status=True)
    patch_icr(k8s, "a", {"spec": {"port": 1}})
    delete_icr(k8s, "a")
    events = await watching.result()
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [int(rv) for _, _, rv in events]
    assert versions == sorted(set(versions)) and versions[0] > int(since)


async def test_watch_without_version_starts_with_current_objects(
    kube: Emulator, k8s: ApiClient
) -> None:
    create_icr(k8s, icr("x"))
    CoreV1Api(k8s).create_namespace({"metadata": {"name": "other"}})
    create_icr(k8s, icr("y"), namespace="other")
    events = await (await Collector(k8s, 1).start(kube)).result()
    assert [(t, n) for t, n, _ in events] == [("ADDED", "x")]
    everywhere = await (await Collector(k8s, 2, namespace=None).start(kube)).result()
    assert sorted(n for _, n, _ in everywhere) == ["x", "y"]
    assert sorted(o["metadata"]["name"] for o in list_icrs(k8s)) == ["x", "y"]


async def test_selector_watch_sees_objects_enter_and_leave(kube: Emulator, k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    since = list_version(k8s)
    watching = await Collector(k8s, 3, resource_version=since, label_selector="app=glance").start(
        kube
    )
    patch_icr(k8s, "a", {"metadata": {"labels": {"other": "1"}}})  # not seen
    patch_icr(k8s, "a", {"metadata": {"labels": {"app": "glance"}}})
    patch_icr(k8s, "a", {"metadata": {"labels": {"app": "glance", "x": "1"}}})
    patch_icr(k8s, "a", {"metadata": {"labels": {"app": "nova"}}})
    events = await watching.result()
    assert [t for t, _, _ in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_timeout_seconds_ends_the_stream(k8s: ApiClient) -> None:
    started = time.monotonic()
    stream = kubernetes.watch.Watch().stream(
        CustomObjectsApi(k8s).list_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        timeout_seconds=1,
    )
    assert list(stream) == []
    assert time.monotonic() - started < DEADLINE


async def test_every_watcher_gets_the_same_bytes_encoded_once(
    kube: Emulator, k8s: ApiClient
) -> None:
    since = list_version(k8s)
    url = kube.url + resource_path(ICR, NS)
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "30"}
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(headers=kube.auth_headers, timeout=timeout) as session:

        async def lines(response: aiohttp.ClientResponse) -> list[bytes]:
            return [await response.content.readline() for _ in range(3)]

        async with (
            session.get(url, params=params) as first,
            session.get(url, params={**params, "labelSelector": "app=glance"}) as second,
        ):
            await wait_for(lambda: kube.open_watches >= 2, "both watches are open")
            create_icr(k8s, {**icr("a"), "metadata": {"name": "a", "labels": {"app": "glance"}}})
            patch_icr(k8s, "a", {"status": {"phase": "Queued"}}, status=True)
            delete_icr(k8s, "a")
            seen = await asyncio.gather(lines(first), lines(second))
    assert seen[0] == seen[1]
    assert [line.split(b'"', 4)[3] for line in seen[0]] == [b"ADDED", b"MODIFIED", b"DELETED"]
    changes = kube.run_in_server(lambda: kube.store.history[-3:])
    assert [list(c.encoded) for c in changes] == [["ADDED"], ["MODIFIED"], ["DELETED"]]
    assert [
        c.encoded[t] for c, t in zip(changes, ["ADDED", "MODIFIED", "DELETED"], strict=True)
    ] == seen[0]
