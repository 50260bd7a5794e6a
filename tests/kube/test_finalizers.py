"""Deletion with and without finalizers, driven with the official ``kubernetes`` client.

Covers: an object without finalizers is gone at once; with finalizers DELETE sets
deletionTimestamp and keeps it (a second DELETE changes nothing); no new finalizers once
deleting; removing the last finalizer by a patch makes it gone; DELETE preconditions.
"""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi, V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from tests.kube.official import (
    GROUP,
    NS,
    PLURAL,
    VERSION,
    create_icr,
    delete_icr,
    get_icr,
    icr,
    patch_icr,
    status_of,
)


def test_delete_without_finalizers_is_immediate(k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    assert delete_icr(k8s, "a") is not None
    assert get_icr(k8s, "a") is None
    assert delete_icr(k8s, "a") is None


def test_finalizers_hold_the_object_until_removed(k8s: ApiClient) -> None:
    body = icr("a")
    body["metadata"]["finalizers"] = ["imagecache.dev/evict"]
    create_icr(k8s, body)
    deleting = delete_icr(k8s, "a")
    assert deleting is not None and deleting["metadata"]["deletionTimestamp"]
    again = delete_icr(k8s, "a")
    assert (
        again is not None
        and again["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
    )
    stored = get_icr(k8s, "a")
    assert (
        stored is not None
        and stored["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]
    )

    with pytest.raises(ApiException) as err:
        patch_icr(k8s, "a", {"metadata": {"finalizers": ["imagecache.dev/evict", "other"]}})
    assert err.value.status == 422
    assert "no new finalizers can be added" in status_of(err.value)["message"]

    patch_icr(k8s, "a", {"status": {"phase": "Cached"}}, status=True)
    assert get_icr(k8s, "a") is not None
    patch_icr(k8s, "a", {"metadata": {"finalizers": None}})
    assert get_icr(k8s, "a") is None


def test_delete_preconditions(k8s: ApiClient) -> None:
    create_icr(k8s, icr("a"))
    options = V1DeleteOptions(preconditions=V1Preconditions(uid="not-it"))
    with pytest.raises(ApiException) as err:
        CustomObjectsApi(k8s).delete_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a", body=options
        )
    assert err.value.status == 409 and "Precondition failed" in status_of(err.value)["message"]
    assert get_icr(k8s, "a") is not None
