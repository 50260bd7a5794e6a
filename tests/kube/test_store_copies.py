"""What the store keeps shares nothing with what it was given, nor with earlier versions.

A write copies the object once (not once per step) and a merge patch builds only the patched
paths, sharing the rest with the stored object: these tests pin that nothing leaks through the
sharing. Covers: a created object independent of the body it came from; a status merge patch and
a main-resource merge patch leaving the previous version (which watch events still carry)
untouched and the stored result independent of the patch; a delete's last state.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.kube.emulator import CRD_PATH, load_crds
from tests.kube.patching import merge_patch
from tests.kube.resources import ResourceType, builtin_types
from tests.kube.store import CRD_KEY, NS_KEY, Store

TYPE_KEY = ("imagecache.dev", "v1alpha1", "imagecacherequests")


@pytest.fixture
def store() -> Store:
    store = Store(builtin_types())
    for crd in load_crds([CRD_PATH]):
        store.create(store.types[CRD_KEY], None, crd)
    store.create(store.types[NS_KEY], None, {"metadata": {"name": "default"}})
    return store


def body() -> dict[str, Any]:
    return {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
        "spec": {"image": "img", "pod": "p"},
    }


def rt(store: Store) -> ResourceType:
    return store.types[TYPE_KEY]


def test_a_created_object_is_independent_of_its_body(store: Store) -> None:
    given = body()
    store.create(rt(store), "default", given)
    given["spec"]["image"] = "changed"
    given["metadata"]["labels"]["a"] = "changed"
    given["metadata"]["finalizers"].append("g")
    stored = store.get(rt(store), "default", "x")
    assert stored["spec"]["image"] == "img"
    assert stored["metadata"]["labels"] == {"a": "1"} and stored["metadata"]["finalizers"] == ["f"]


@pytest.mark.parametrize(
    ("patch", "subresource"),
    [
        pytest.param(
            {"status": {"phase": "Queued", "target": {"pod": "p"}}}, "status", id="status"
        ),
        pytest.param({"metadata": {"labels": {"b": "2"}}, "spec": {"port": 80}}, None, id="main"),
    ],
)
def test_a_merge_patch_leaves_the_previous_version_and_the_patch_apart(
    store: Store, patch: dict[str, Any], subresource: str | None
) -> None:
    store.create(rt(store), "default", body())
    store.write(
        rt(store),
        "default",
        "x",
        merge_patch(store.get(rt(store), "default", "x"), {"status": {"target": {"pod": "q"}}}),
        subresource="status",
        rv_precondition=None,
    )
    old = store.get(rt(store), "default", "x")
    before = copy.deepcopy(old)
    new = store.write(
        rt(store),
        "default",
        "x",
        merge_patch(old, patch),
        subresource=subresource,
        rv_precondition=None,
    )
    assert old == before  # the previous version, as watch events carry it, is unchanged
    assert new is store.get(rt(store), "default", "x") and new != old
    snapshot = copy.deepcopy(new)
    for part in patch.values():
        for value in part.values():
            if isinstance(value, dict):
                value["injected"] = "after the write"
    assert store.get(rt(store), "default", "x") == snapshot
    for key in ("metadata", "spec", "status"):
        assert new[key] is not old[key]  # every part of the new version is its own


def test_a_delete_leaves_the_last_version_apart(store: Store) -> None:
    store.create(rt(store), "default", body())
    old = store.get(rt(store), "default", "x")
    before = copy.deepcopy(old)
    marked = store.delete(rt(store), "default", "x")  # a finalizer holds it
    assert marked["metadata"]["deletionTimestamp"] and old == before
    assert "deletionTimestamp" not in old["metadata"]
