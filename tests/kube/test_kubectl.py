"""A real kubectl against the emulator (skipped when kubectl is not installed).

Covers: apply (create, then unchanged), get with server-side printing (printer columns),
describe with events, wait for a jsonpath condition set while kubectl waits, and a refusal
shown as the API server's message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubernetes.client import ApiClient, CoreV1Api

from tests.kube.emulator import Emulator
from tests.kube.kubectl import require_kubectl, run_kubectl
from tests.kube.official import patch_icr

MANIFEST = """\
apiVersion: imagecache.dev/v1alpha1
kind: ImageCacheRequest
metadata: {name: demo}
spec: {image: img-1, pod: glance-api-0}
"""


async def test_apply_get_describe_wait(kube: Emulator, k8s: ApiClient, tmp_path: Path) -> None:
    require_kubectl()
    manifest = tmp_path / "icr.yaml"
    manifest.write_text(MANIFEST)
    applied = await run_kubectl(kube.kubeconfig, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "imagecacherequest.imagecache.dev/demo created" in applied.stdout
    again = await run_kubectl(kube.kubeconfig, "apply", "-f", str(manifest))
    assert "unchanged" in again.stdout, again.stderr

    status = {
        "phase": "Caching",
        "reason": "Downloading",
        "target": {"pod": "glance-api-0"},
        "progress": {"percent": 42},
    }
    obj = patch_icr(k8s, "demo", {"status": status}, status=True)
    got = await run_kubectl(kube.kubeconfig, "get", "icr")
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "IMAGE",
        "POD",
        "PHASE",
        "REASON",
        "PROGRESS",
        "CACHED",
        "TOTAL",
        "AGE",
    ]
    assert row.split()[:6] == ["demo", "img-1", "glance-api-0", "Caching", "Downloading", "42"]

    event = {
        "metadata": {"name": "demo.1"},
        "type": "Normal",
        "reason": "Caching",
        "message": "42% of img-1",
        "involvedObject": {
            "apiVersion": "imagecache.dev/v1alpha1",
            "kind": "ImageCacheRequest",
            "name": "demo",
            "namespace": "default",
            "uid": obj["metadata"]["uid"],
        },
        "lastTimestamp": "2025-01-01T00:00:00Z",
        "count": 1,
    }
    CoreV1Api(k8s).create_namespaced_event("default", event)
    described = await run_kubectl(kube.kubeconfig, "describe", "icr", "demo")
    assert described.returncode == 0, described.stderr
    assert "Image:" in described.stdout and "42% of img-1" in described.stdout

    waiting = asyncio.create_task(
        run_kubectl(
            kube.kubeconfig,
            "wait",
            "--for=jsonpath={.status.phase}=Cached",
            "icr/demo",
            "--timeout=20s",
        )
    )
    # The change must come while kubectl watches: wait (bounded) until its watch has arrived.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not any(r.params.get("watch") == "true" and r.name is None for r in kube.requests[-5:]):
        assert loop.time() < deadline, "kubectl wait never started watching"
        await asyncio.sleep(0.05)
    patch_icr(k8s, "demo", {"status": {"phase": "Cached"}}, status=True)
    waited = await waiting
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout


async def test_refusal_reads_like_the_api_server(kube: Emulator, tmp_path: Path) -> None:
    require_kubectl()
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        MANIFEST.replace("spec: {image: img-1, pod: glance-api-0}", "spec: {image: img-1}")
    )
    applied = await run_kubectl(kube.kubeconfig, "apply", "-f", str(manifest))
    assert applied.returncode != 0
    assert (
        'spec: Invalid value: "object": exactly one of spec.pod or spec.podSelector must be set'
        in applied.stderr
    )
