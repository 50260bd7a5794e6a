"""``coordination.k8s.io/v1`` Leases, driven with the official ``kubernetes`` client.

Covers: discovery lists the group and the resource; create, read, list; optimistic concurrency
exactly like the API server (PUT with a stale ``resourceVersion`` -> 409 Conflict, create of an
existing name -> 409 AlreadyExists, an unconditional PUT and a merge patch accepted); MicroTime
strictness (six fraction digits or 400 — which the official client's own model serialisation
violates for a whole second — and times stored in UTC); 422 on a non-positive duration; a watch
from a list's resourceVersion sees the update.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from tests.kube.emulator import Emulator

NS = "default"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


def lease_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "renewTime": "2026-11-30T19:00:00.123456Z",
            **spec,
        },
    }


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def test_discovery_serves_coordination_v1_leases(k8s: ApiClient) -> None:
    groups = kubernetes.client.ApisApi(k8s).get_api_versions()
    assert "coordination.k8s.io" in [g.name for g in groups.groups]
    resources = CoordinationV1Api(k8s).get_api_resources()
    lease = next(r for r in resources.resources if r.name == "leases")
    assert lease.namespaced and lease.kind == "Lease"
    assert {"create", "get", "list", "watch", "update", "patch"} <= set(lease.verbs)


def test_create_read_list(k8s: ApiClient) -> None:
    api = CoordinationV1Api(k8s)
    created = api.create_namespaced_lease(NS, lease_body("l"))
    assert created.metadata.resource_version and created.metadata.uid
    got = api.read_namespaced_lease("l", NS)
    assert got.spec.holder_identity == "a"
    assert got.spec.renew_time == datetime(2026, 11, 30, 19, 0, 0, 123456, tzinfo=UTC)
    assert [item.metadata.name for item in api.list_namespaced_lease(NS).items] == ["l"]


def test_create_of_an_existing_name_is_409_already_exists(k8s: ApiClient) -> None:
    api = CoordinationV1Api(k8s)
    api.create_namespaced_lease(NS, lease_body("l"))
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_lease(NS, lease_body("l", holderIdentity="b"))
    assert refused.value.status == 409
    assert status_of(refused.value)["reason"] == "AlreadyExists"
    assert api.read_namespaced_lease("l", NS).spec.holder_identity == "a"


def test_put_with_a_stale_resource_version_is_409_conflict(k8s: ApiClient) -> None:
    api = CoordinationV1Api(k8s)
    first = api.create_namespaced_lease(NS, lease_body("l"))
    stale = first.metadata.resource_version
    won = lease_body("l", holderIdentity="b")
    won["metadata"]["resourceVersion"] = stale
    written = api.replace_namespaced_lease("l", NS, won)
    assert int(written.metadata.resource_version) > int(stale)
    lost = lease_body("l", holderIdentity="c")
    lost["metadata"]["resourceVersion"] = stale
    with pytest.raises(ApiException) as refused:
        api.replace_namespaced_lease("l", NS, lost)
    assert refused.value.status == 409
    status = status_of(refused.value)
    assert status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert api.read_namespaced_lease("l", NS).spec.holder_identity == "b"


def test_unconditional_put_and_merge_patch_are_accepted(k8s: ApiClient) -> None:
    api = CoordinationV1Api(k8s)
    api.create_namespaced_lease(NS, lease_body("l"))
    api.replace_namespaced_lease("l", NS, lease_body("l", holderIdentity="b"))
    patched = api.patch_namespaced_lease("l", NS, {"spec": {"leaseTransitions": 2}})
    assert (patched.spec.holder_identity, patched.spec.lease_transitions) == ("b", 2)


@pytest.mark.parametrize(
    "renew_time",
    [
        pytest.param("2026-11-30T19:00:00Z", id="no-fraction"),
        pytest.param("2026-11-30T19:00:00.5Z", id="short-fraction"),
        pytest.param("2026-11-30T19:00:00+00:00", id="isoformat-of-a-whole-second"),
        pytest.param("yesterday", id="not-a-time"),
    ],
)
async def test_micro_time_needs_six_fraction_digits(kube: Emulator, renew_time: str) -> None:
    # KubeClient, not the official client: that one parses times into datetimes before sending
    # (so it cannot send a malformed MicroTime), and this is about what the server accepts.
    code, status = await kube.client.request(
        "POST", LEASES, body=lease_body("l", renewTime=renew_time)
    )
    assert code == 400
    assert status["reason"] == "BadRequest"
    assert "cannot be handled as a Lease" in status["message"]


def test_the_official_models_own_serialisation_trips_on_a_whole_second(k8s: ApiClient) -> None:
    """Why the operator writes Lease bodies as dicts: ``isoformat()`` drops a zero fraction."""
    api = CoordinationV1Api(k8s)

    def model(moment: datetime) -> kubernetes.client.V1Lease:
        return kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name="l"),
            spec=kubernetes.client.V1LeaseSpec(holder_identity="a", renew_time=moment),
        )

    with pytest.raises(ApiException) as refused:
        api.create_namespaced_lease(NS, model(datetime(2026, 11, 30, 19, 0, 0, tzinfo=UTC)))
    assert refused.value.status == 400
    created = api.create_namespaced_lease(NS, model(datetime(2026, 11, 30, 19, 0, 0, 1, UTC)))
    assert created.spec.renew_time.microsecond == 1


def test_times_are_stored_in_utc(k8s: ApiClient) -> None:
    east = timezone(timedelta(hours=2))
    body = lease_body("l", acquireTime="2026-11-30T21:00:00.000001+02:00")
    api = CoordinationV1Api(k8s)
    api.create_namespaced_lease(NS, body)
    raw = api.read_namespaced_lease("l", NS, _preload_content=False)
    assert json.loads(raw.data)["spec"]["acquireTime"] == "2026-11-30T19:00:00.000001Z"
    assert api.read_namespaced_lease("l", NS).spec.acquire_time == datetime(
        2026, 11, 30, 21, 0, 0, 1, tzinfo=east
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"leaseDurationSeconds": 0}, "spec.leaseDurationSeconds", id="zero-duration"),
        pytest.param({"leaseTransitions": -1}, "spec.leaseTransitions", id="negative-transitions"),
    ],
)
def test_invalid_spec_is_422(k8s: ApiClient, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiException) as refused:
        CoordinationV1Api(k8s).create_namespaced_lease(NS, lease_body("l", **spec))
    assert refused.value.status == 422
    status = status_of(refused.value)
    assert status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == [field]


def test_watch_from_a_list_sees_the_update(k8s: ApiClient) -> None:
    api = CoordinationV1Api(k8s)
    api.create_namespaced_lease(NS, lease_body("l"))
    since = api.list_namespaced_lease(NS).metadata.resource_version
    api.patch_namespaced_lease("l", NS, {"spec": {"holderIdentity": "b"}})
    stream = kubernetes.watch.Watch().stream(
        api.list_namespaced_lease, NS, resource_version=since, timeout_seconds=5
    )
    event = next(iter(stream))
    assert event["type"] == "MODIFIED"
    assert event["object"].spec.holder_identity == "b"
