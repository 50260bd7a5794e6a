"""Fault injection on the strict emulator, driven with the official ``kubernetes`` client.

Covers: a kmock DSL reaction answers first, then the emulator serves as usual; `fail_writes`
failing the next N matching writes (and only those: verb, resource, subresource) with the real
server's Status body, failing until cleared, one client's writes only, and a time-bounded
fault's expiry; the write log naming who wrote (each client its own token) and what it was
answered; `drop_watches` ending open watch streams so a client re-watches from its last
resourceVersion and misses nothing, or cutting the connections (`abrupt`); `watch_gap`: a
watch gap ending in 410 Gone during which objects are deleted that no watch reports.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
import kmock
import kubernetes
import pytest
from kubernetes.client import ApiClient, CoordinationV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.kube.emulator import Emulator
from tests.kube.faults import Fault

GROUP, VERSION, PLURAL, NS = "imagecache.dev", "v1alpha1", "imagecacherequests", "default"
DEADLINE = 10.0


def create_request(api: ApiClient, name: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageCacheRequest",
        "metadata": {"name": name},
        "spec": {"image": "i", "pod": "p"},
    }
    CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def patch_status(api: ApiClient, name: str, phase: str) -> dict[str, Any]:
    written: dict[str, Any] = CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, name, {"status": {"phase": phase}}
    )
    return written


def lease(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": "x"}}


async def wait_for(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.02)


async def test_a_kmock_reaction_answers_first_then_normal_service(
    kube: Emulator, k8s: ApiClient
) -> None:
    create_request(k8s, "a")
    kube.mock[kmock.method.PATCH, kmock.subresource("status")][:1] << 503
    with pytest.raises(ApiException) as err:
        patch_status(k8s, "a", "Queued")
    assert err.value.status == 503
    assert patch_status(k8s, "a", "Queued")["status"]["phase"] == "Queued"
    patches = [r for r in kube.requests if r.method == kmock.method.PATCH]
    assert len(patches) == 2 and all(r.subresource == "status" for r in patches)


async def test_fail_the_next_n_matching_writes_only(kube: Emulator, k8s: ApiClient) -> None:
    create_request(k8s, "a")
    fault = kube.fail_writes(503, verb="patch", resource=PLURAL, subresource="status", times=2)
    CustomObjectsApi(k8s).patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "a", {"metadata": {"labels": {"x": "1"}}}
    )  # the main resource: not matched
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            patch_status(k8s, "a", "Queued")
        assert err.value.status == 503
        status = json.loads(err.value.body)
        assert (status["kind"], status["reason"], status["code"]) == (
            "Status",
            "ServiceUnavailable",
            503,
        )
    assert patch_status(k8s, "a", "Queued")["status"]["phase"] == "Queued"
    assert fault.hits == 2
    assert [(w.verb, w.subresource, w.code) for w in kube.writes] == [
        ("create", None, 201),
        ("patch", None, 200),
        ("patch", "status", 503),
        ("patch", "status", 503),
        ("patch", "status", 200),
    ]


async def test_fail_until_cleared(kube: Emulator, k8s: ApiClient) -> None:
    leases = CoordinationV1Api(k8s)
    fault = kube.fail_writes(409, resource="leases")
    for _ in range(3):
        with pytest.raises(ApiException) as err:
            leases.create_namespaced_lease(NS, lease("l"))
        assert err.value.status == 409
        assert json.loads(err.value.body)["reason"] == "Conflict"
    fault.clear()
    assert leases.create_namespaced_lease(NS, lease("l")).metadata.name == "l"
    kube.fail_writes(422, verb="update")
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("l", NS, lease("l"))
    assert err.value.status == 422
    kube.clear_faults()
    leases.replace_namespaced_lease("l", NS, lease("l"))


@pytest.mark.parametrize(
    ("fault", "now", "active"),
    [
        pytest.param(Fault(503, until=10.0), 9.9, True, id="before-expiry"),
        pytest.param(Fault(503, until=10.0), 10.0, False, id="expired"),
        pytest.param(Fault(503, times=0), 0.0, False, id="used-up"),
        pytest.param(Fault(503, cleared=True), 0.0, False, id="cleared"),
        pytest.param(Fault(503), 1e9, True, id="until-cleared"),
    ],
)
def test_fault_lifetime(fault: Fault, now: float, active: bool) -> None:
    assert fault.active(now) is active


async def test_write_log_names_each_writer_and_faults_can_pick_one(kube: Emulator) -> None:
    kube.fail_writes(500, verb="create", token="bob", times=1)
    with kube.official_client("alice") as alice, kube.official_client("bob") as bob:
        CoordinationV1Api(alice).create_namespaced_lease(NS, lease("a"))
        with pytest.raises(ApiException):
            CoordinationV1Api(bob).create_namespaced_lease(NS, lease("b"))
        CoordinationV1Api(bob).delete_namespaced_lease("a", NS)
    assert [
        (w.token, w.verb, w.name or w.body["metadata"]["name"], w.code) for w in kube.writes
    ] == [
        ("alice", "create", "a", 201),
        ("bob", "create", "b", 500),
        ("bob", "delete", "a", 200),
    ]
    assert all(w.user_agent.startswith("OpenAPI-Generator/") for w in kube.writes)


async def test_dropped_watches_are_resumed_by_the_client(kube: Emulator, k8s: ApiClient) -> None:
    leases = CoordinationV1Api(k8s)
    leases.create_namespaced_lease(NS, lease("before"))
    since = leases.list_namespaced_lease(NS).metadata.resource_version
    seen: list[str] = []
    watch = kubernetes.watch.Watch()

    def consume() -> None:
        # No timeout_seconds: the official client re-watches from its last resourceVersion
        # whenever the server ends the stream.
        for event in watch.stream(leases.list_namespaced_lease, NS, resource_version=since):
            seen.append(f"{event['type']} {event['object'].metadata.name}")
            if len(seen) == 2:
                watch.stop()
                return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    await wait_for(lambda: kube.open_watches == 1, "the watch is open")
    leases.create_namespaced_lease(NS, lease("one"))
    await wait_for(lambda: len(seen) == 1, "the first event")
    assert kube.drop_watches() == 1
    await wait_for(lambda: kube.open_watches == 1, "the client watches again")
    leases.create_namespaced_lease(NS, lease("two"))
    await asyncio.to_thread(consumer.join, DEADLINE)
    assert seen == ["ADDED one", "ADDED two"]
    watches = [r for r in kube.requests if r.params.get("watch") in ("true", "1", "True")]
    assert len(watches) == 2
    assert int(watches[1].params["resourceVersion"]) > int(since)


async def test_abrupt_drop_cuts_the_connection(kube: Emulator) -> None:
    url = f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    async with (
        aiohttp.ClientSession(headers=kube.auth_headers) as session,
        session.get(url, params={"watch": "true"}) as response,
    ):
        assert response.status == 200
        await wait_for(lambda: kube.open_watches == 1, "the watch is open")
        assert kube.drop_watches(abrupt=True) == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(response.read(), DEADLINE)


async def test_a_watch_gap_deletes_unseen_and_ends_in_410_gone(
    kube: Emulator, k8s: ApiClient
) -> None:
    leases = CoordinationV1Api(k8s)
    leases.create_namespaced_lease(NS, lease("doomed"))
    leases.create_namespaced_lease(NS, lease("kept"))
    since = leases.list_namespaced_lease(NS).metadata.resource_version
    url = f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    watch = {"watch": "true", "resourceVersion": since}
    async with aiohttp.ClientSession(headers=kube.auth_headers) as session:
        async with session.get(url, params=watch) as response:
            await wait_for(lambda: kube.open_watches == 1, "the watch is open")
            assert kube.watch_gap(deleting=[("leases", NS, "doomed")]) == 1
            seen = await asyncio.wait_for(response.read(), DEADLINE)
        assert seen.strip() == b""  # the stream ended without reporting the deletion
        async with session.get(url, params=watch) as response:
            events = [json.loads(line) for line in (await response.read()).splitlines() if line]
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
    names = [item.metadata.name for item in leases.list_namespaced_lease(NS).items]
    assert names == ["kept"]  # only a new list shows the deletion
