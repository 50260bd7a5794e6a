"""A CustomResourceDefinition changed or deleted through the API, as the real API server sees it.

Covers: each served CRD version validated by a `Validator` built once when the CRD is
registered (its CEL rules compiled then, reused by every write), a changed CRD (PUT) replacing
it, so the next write follows the new schema and the new rules, and a deleted CRD taking its
resource and its objects with it (404 until it is created again, and then no old objects).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.kube.client import ICR, ApiError
from tests.kube.emulator import Emulator
from tests.kube.official import icr
from tests.kube.store import CRD_KEY

CRD = "apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = "imagecacherequests.imagecache.dev"
TYPE_KEY = ("imagecache.dev", "v1alpha1", "imagecacherequests")
NEW_RULE = "self.startsWith('img-')"


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = crd["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


async def changed_crd(kube: Emulator) -> dict[str, Any]:
    """The CRD as served, with a new CEL rule on ``spec.image`` and ``spec.port`` >= 100."""
    crd = await kube.client.get(CRD, CRD_NAME)
    assert crd is not None
    crd = copy.deepcopy(crd)
    props = spec_schema(crd)["properties"]
    props["image"]["x-kubernetes-validations"].append(
        {"rule": NEW_RULE, "message": "spec.image must start with img-"}
    )
    props["port"]["minimum"] = 100
    return crd


async def test_rules_are_compiled_once_per_crd_version(kube: Emulator) -> None:
    validator = kube.run_in_server(lambda: kube.store.types[TYPE_KEY].validator)
    assert validator is not None
    programs = dict(validator.programs)
    assert "self == oldSelf" in programs and all(
        not isinstance(p, Exception) for p in programs.values()
    )
    for n in range(5):
        await kube.client.create(ICR, icr(f"r{n}"), namespace="default")
        await kube.client.patch(
            ICR, f"r{n}", {"status": {"phase": "Queued"}}, namespace="default", subresource="status"
        )
    after = kube.run_in_server(lambda: kube.store.types[TYPE_KEY].validator)
    assert after is validator  # the same compiled programs served every write
    assert validator.programs.keys() == programs.keys()
    assert all(validator.programs[rule] is programs[rule] for rule in programs)


async def test_a_changed_crd_validates_the_next_write_by_its_new_schema(kube: Emulator) -> None:
    await kube.client.create(ICR, icr("before", image="other", port=50), namespace="default")
    old_validator = kube.run_in_server(lambda: kube.store.types[TYPE_KEY].validator)
    await kube.client.replace(CRD, await changed_crd(kube))

    new_validator = kube.run_in_server(lambda: kube.store.types[TYPE_KEY].validator)
    assert new_validator is not old_validator and NEW_RULE in new_validator.programs
    with pytest.raises(ApiError) as err:
        await kube.client.create(ICR, icr("rule", image="other"), namespace="default")
    assert err.value.status == 422
    assert "spec.image must start with img-" in err.value.message
    with pytest.raises(ApiError) as err:
        await kube.client.create(ICR, icr("minimum", port=50), namespace="default")
    assert err.value.status == 422
    assert "spec.port in body should be greater than or equal to 100" in err.value.message
    created = await kube.client.create(ICR, icr("after", port=100), namespace="default")
    assert created["spec"]["port"] == 100
    assert await kube.client.get(ICR, "before", namespace="default") is not None  # kept


async def test_a_deleted_crd_takes_its_resource_and_objects(kube: Emulator) -> None:
    await kube.client.create(ICR, icr("a"), namespace="default")
    crd = await kube.client.get(CRD, CRD_NAME)
    assert crd is not None
    await kube.client.delete(CRD, CRD_NAME)
    with pytest.raises(ApiError) as err:
        await kube.client.list(ICR, namespace="default")
    assert err.value.status == 404
    assert (
        kube.run_in_server(lambda: [key for key in kube.store.objects if key[0] == TYPE_KEY]) == []
    )
    fresh = {k: v for k, v in crd.items() if k in ("apiVersion", "kind", "spec")}
    await kube.client.create(CRD, {**fresh, "metadata": {"name": CRD_NAME}})
    assert await kube.client.list(ICR, namespace="default") == []
    assert kube.run_in_server(lambda: TYPE_KEY in kube.store.types and CRD_KEY in kube.store.types)
