"""Deletion with and without finalizers.

Covers: an object without finalizers is gone at once; with finalizers DELETE sets
deletionTimestamp and keeps it (a second DELETE changes nothing); no new finalizers once
deleting; removing the last finalizer by a patch makes it gone; DELETE preconditions.
"""

from __future__ import annotations

import pytest

from tests.kube.client import ICR, ApiError
from tests.kube.emulator import Emulator

BODY = {"metadata": {"name": "a"}, "spec": {"image": "img", "pod": "p"}}


async def test_delete_without_finalizers_is_immediate(kube: Emulator) -> None:
    await kube.client.create(ICR, BODY, namespace="default")
    assert await kube.client.delete(ICR, "a", namespace="default") is not None
    assert await kube.client.get(ICR, "a", namespace="default") is None
    assert await kube.client.delete(ICR, "a", namespace="default") is None


async def test_finalizers_hold_the_object_until_removed(kube: Emulator) -> None:
    body = {**BODY, "metadata": {"name": "a", "finalizers": ["imagecache.dev/evict"]}}
    await kube.client.create(ICR, body, namespace="default")
    deleting = await kube.client.delete(ICR, "a", namespace="default")
    assert deleting is not None and deleting["metadata"]["deletionTimestamp"]
    again = await kube.client.delete(ICR, "a", namespace="default")
    assert (
        again is not None
        and again["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
    )
    stored = await kube.client.get(ICR, "a", namespace="default")
    assert (
        stored is not None
        and stored["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]
    )

    with pytest.raises(ApiError) as err:
        await kube.client.patch(
            ICR,
            "a",
            {"metadata": {"finalizers": ["imagecache.dev/evict", "other"]}},
            namespace="default",
        )
    assert err.value.status == 422 and "no new finalizers can be added" in err.value.message

    await kube.client.patch(
        ICR, "a", {"status": {"phase": "Cached"}}, namespace="default", subresource="status"
    )
    assert await kube.client.get(ICR, "a", namespace="default") is not None
    await kube.client.patch(ICR, "a", {"metadata": {"finalizers": None}}, namespace="default")
    assert await kube.client.get(ICR, "a", namespace="default") is None


async def test_delete_preconditions(kube: Emulator) -> None:
    await kube.client.create(ICR, BODY, namespace="default")
    path = "/apis/imagecache.dev/v1alpha1/namespaces/default/imagecacherequests/a"
    status, body = await kube.client.request(
        "DELETE", path, body={"preconditions": {"uid": "not-it"}}
    )
    assert status == 409 and "Precondition failed" in body["message"]
    assert await kube.client.get(ICR, "a", namespace="default") is not None
