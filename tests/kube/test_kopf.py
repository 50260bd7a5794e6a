"""A tiny kopf operator, run for real by KopfRunner against the emulator.

Covers: kopf's discovery, list+watch, status subresource patching and finalizer-free handling
work end to end, both namespaced (``--namespace default``) and cluster-wide (``-A``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes.client import ApiClient

from tests.kube.emulator import Emulator
from tests.kube.official import create_icr, get_icr, icr

DEADLINE = 30.0

FANOUT_DEFAULTS = {"enabled": True, "seeds": 1, "width": 4}  # the CRD defaults `fanout: {}`


def make_registry(kube: Emulator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url, token=kube.token)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 10
        settings.posting.enabled = False

    @kopf.on.create("imagecache.dev", "v1alpha1", "imagecacherequests", registry=registry)
    def queue(spec: dict[str, Any], patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Queued"
        patch.status["message"] = f"queued {spec['image']}"

    return registry


@pytest.mark.parametrize(
    "scope", [["--namespace", "default"], ["-A"]], ids=["namespaced", "clusterwide"]
)
async def test_kopf_sees_objects_and_patches_status(
    kube: Emulator, k8s: ApiClient, scope: list[str]
) -> None:
    registry = make_registry(kube)
    with KopfRunner(["run", "--standalone", *scope], registry=registry, timeout=DEADLINE) as runner:
        create_icr(k8s, icr("x", pod="p"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            obj = get_icr(k8s, "x")
            if obj is not None and obj.get("status", {}).get("phase") == "Queued":
                break
            assert loop.time() < deadline, f"kopf never set the status: {obj}\n{runner.output}"
            await asyncio.sleep(0.1)
    assert runner.exit_code == 0, runner.output
    assert obj["status"]["message"] == "queued img-1"
    assert obj["spec"] == {
        "image": "img-1",
        "pod": "p",
        "evictOnDelete": False,
        "fanout": FANOUT_DEFAULTS,
    }
    assert obj["metadata"]["generation"] == 1  # kopf's annotations and status did not bump it
