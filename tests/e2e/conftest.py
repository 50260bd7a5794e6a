"""Fixtures for the kind end-to-end tests (marker e2e; run with `make e2e`).

Covers: skipping with a clear reason when kind, docker (or its engine), kubectl or helm is
missing; one kind cluster per session on a pinned node image (or an existing one named by
IMAGECACHE_E2E_CLUSTER); the image built from this repo, saved with `docker save` and loaded with
`kind load image-archive` (`kind load docker-image` fails with Docker's containerd image store);
an in-cluster HTTP upstream serving generated images; the chart installed with agents, watching
its own namespace only; a per-test `requests` factory that deletes what the test created, so
every test stands alone under `-k`; diagnostics dumped when a test fails.

Time: the session fixtures run once, inside the first test that needs them; every command they
run has its own deadline (at most ~40 minutes in all, ~5 in practice), so the tests use
`timeout(..., func_only=True)` and their per-test limit covers only their own body. The CI job's
timeout-minutes bounds the whole run.

Environment: IMAGECACHE_E2E_REQUIRE=1 (fail instead of skipping; CI sets it),
IMAGECACHE_E2E_CLUSTER (reuse this kind cluster, do not delete it),
IMAGECACHE_E2E_KEEP=1 (keep the cluster created here), IMAGECACHE_E2E_NODE_IMAGE (another kind
node image), IMAGECACHE_E2E_ARTIFACTS (a directory that receives the diagnostics of failed tests,
for CI to upload).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import REPO, Cluster, CommandError, find_tool, run
from tests.e2e.upstream import IMAGES, GeneratedImage, upstream_manifest

NAMESPACE = "imagecache-e2e"
RELEASE = "ic"
IMAGE = "imagecache:e2e"
VALUES = REPO / "examples" / "values-kind.yaml"
# The node image of kind v0.29.0 for Kubernetes 1.33.1, by digest as kind's release notes list it
# (kind's own default for that release). kind itself is pinned in .github/workflows/e2e.yml.
# kind >= 0.24 ships kindnet with NetworkPolicy enforcement (kube-network-policies).
NODE_IMAGE = (
    "kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f"
)


def _missing_tools() -> str | None:
    tools = {name: find_tool(name) for name in ("kind", "docker", "kubectl", "helm")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return f"e2e needs {', '.join(missing)} on PATH or in .tools/bin"
    docker = tools["docker"]
    assert docker is not None
    try:
        info = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
    except CommandError:
        return "the docker engine did not answer `docker info` within 20s"
    if info.returncode != 0 or not info.stdout.strip():
        return f"the docker engine is not reachable: {info.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reason = _missing_tools()
    if reason and os.environ.get("IMAGECACHE_E2E_REQUIRE") == "1":
        pytest.fail(f"IMAGECACHE_E2E_REQUIRE=1 but {reason}")
    if reason:
        pytest.skip(reason)
    kind, kubectl, helm = (find_tool(n) for n in ("kind", "kubectl", "helm"))
    assert kind and kubectl and helm
    existing = os.environ.get("IMAGECACHE_E2E_CLUSTER")
    name = existing or "imagecache-e2e"
    with tempfile.TemporaryDirectory(prefix="imagecache-e2e-") as workdir:
        kubeconfig = Path(workdir) / "kubeconfig"
        if existing:
            kubeconfig.write_text(
                run([kind, "get", "kubeconfig", "--name", name], timeout=30).stdout
            )
        else:
            run([kind, "delete", "cluster", "--name", name], timeout=120, check=False)
            run(
                [
                    kind,
                    "create",
                    "cluster",
                    "--name",
                    name,
                    "--image",
                    os.environ.get("IMAGECACHE_E2E_NODE_IMAGE", NODE_IMAGE),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--wait",
                    "180s",
                ],
                timeout=420,
            )
        try:
            yield Cluster(name=name, kubeconfig=kubeconfig, kubectl_bin=kubectl, helm_bin=helm)
        finally:
            if not existing and os.environ.get("IMAGECACHE_E2E_KEEP") != "1":
                run([kind, "delete", "cluster", "--name", name], timeout=180, check=False)


@pytest.fixture(scope="session")
def image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image built from this repository, loaded into the kind nodes from an archive.

    `kind load docker-image` asks the engine for the image by name and fails with Docker's
    containerd image store ("content digest not found"); an archive made by `docker save` loads
    the same way with either store.
    """
    docker, kind = find_tool("docker"), find_tool("kind")
    assert docker and kind
    run([docker, "build", "--tag", IMAGE, str(REPO)], timeout=600)
    archive = tmp_path_factory.mktemp("image") / "imagecache-e2e.tar"
    run([docker, "save", "--output", str(archive), IMAGE], timeout=300)
    run([kind, "load", "image-archive", str(archive), "--name", cluster.name], timeout=300)
    archive.unlink()
    return IMAGE


@pytest.fixture(scope="session")
def upstream(cluster: Cluster, image: str) -> str:
    """An HTTP upstream in the cluster serving IMAGES; returns its base URL."""
    cluster.apply(
        cluster.kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml"),
        NAMESPACE,
    )
    cluster.apply(upstream_manifest(image), NAMESPACE)
    cluster.kubectl(
        "rollout",
        "status",
        "deployment/e2e-upstream",
        "-n",
        NAMESPACE,
        "--timeout=180s",
        timeout=210,
    )
    return f"http://e2e-upstream.{NAMESPACE}.svc.cluster.local:8000/"


@pytest.fixture(scope="session")
def release(cluster: Cluster, image: str, upstream: str) -> Iterator[str]:
    """The chart with two elected operators and two StatefulSet agents; uninstalled after.

    It watches its own namespace only, so the release test_uninstall_is_clean installs in
    another namespace never sees its requests.
    """
    install(cluster, RELEASE, NAMESPACE, image, upstream)
    try:
        yield RELEASE
    finally:
        # Requests with finalizers must go while the operator still runs.
        cluster.kubectl(
            "delete",
            "imagecacherequests",
            "--all",
            "-n",
            NAMESPACE,
            "--wait=true",
            "--timeout=120s",
            timeout=150,
            check=False,
        )
        if cluster.get_or_none("deployment", f"{RELEASE}-imagecache-operator", NAMESPACE):
            cluster.helm(
                "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m"
            )


def install(
    cluster: Cluster, release: str, namespace: str, image: str, upstream: str, *extra: str
) -> None:
    """`helm install` the chart from this repository with the kind values, and wait."""
    repository, tag = image.split(":")
    cluster.helm(
        "install",
        release,
        str(REPO / "charts" / "imagecache"),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        str(VALUES),
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"agent.upstream.url={upstream}",
        "--set",
        f"watchNamespaces={{{namespace}}}",
        *extra,
        "--wait",
        "--timeout",
        "5m",
    )


class Requests:
    """ImageCacheRequests one test creates; the fixture deletes them when the test ends."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.names: list[str] = []

    def create(self, name: str, image: GeneratedImage, **spec: Any) -> str:
        manifest = {
            "apiVersion": "imagecache.dev/v1alpha1",
            "kind": "ImageCacheRequest",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"image": image.image_id, **spec},
        }
        self.names.append(name)
        self.cluster.apply(json.dumps(manifest), self.namespace)
        return name

    def delete_all(self) -> None:
        if not self.names:
            return
        self.cluster.kubectl(
            "delete",
            "imagecacherequests",
            *self.names,
            "-n",
            self.namespace,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            timeout=150,
            check=False,
        )


@pytest.fixture
def cache_requests(cluster: Cluster, release: str) -> Iterator[Requests]:
    """Create requests in the release namespace; each is deleted (evictions done) afterwards."""
    made = Requests(cluster, NAMESPACE)
    try:
        yield made
    finally:
        made.delete_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When setting up or running an e2e test fails, attach (and save) the cluster's state."""
    report: pytest.TestReport = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and report.when in ("setup", "call") and isinstance(cluster, Cluster):
        text = cluster.diagnostics(NAMESPACE)
        report.sections.append(("cluster diagnostics", text))
        artifacts = os.environ.get("IMAGECACHE_E2E_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            (Path(artifacts) / f"{item.name}-{report.when}.txt").write_text(text)
    return report


__all__ = ["IMAGES", "NAMESPACE", "RELEASE", "Requests", "install"]
