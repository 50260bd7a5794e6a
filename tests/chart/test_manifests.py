"""Whole renderings: Kubernetes schema validation, labels, `helm lint`, the CRD copy, examples.

Covers: every object of every value set validates (strict) against the Kubernetes schemas that
kubernetes-validate ships, custom objects against their CRDs (the Prometheus Operator's from
tests/chart/crd_schemas); namespaced objects carry the release namespace and every object the
chart labels; `helm lint --strict` per value set; the
chart's CRD is byte-identical to crds/; the example values files render.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart import monitoring_crds
from tests.chart.conftest import CHART, NAMESPACE, REPO, Rendering, run_helm
from tests.chart.values_sets import VALUE_SETS

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBERNETES_VERSIONS = ["1.28.0", "1.33.0"]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
CUSTOM_GROUPS = ("imagecache.dev/",)
EXAMPLE_VALUES = sorted((REPO / "examples").glob("*values*.yaml"))


def crd_kinds() -> set[tuple[str, str]]:
    """(apiVersion, kind) of every custom resource the chart's CRDs define."""
    kinds: set[tuple[str, str]] = set()
    for path in (CHART / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            for version in crd["spec"]["versions"]:
                kinds.add(
                    (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                )
    return kinds


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_every_object_validates(
    render: Callable[..., Rendering], value_set: str, kubernetes_version: str
) -> None:
    rendering = render(VALUE_SETS[value_set], include_crds=True)
    known_custom = crd_kinds()
    for obj in rendering.objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            assert (obj["apiVersion"], obj["kind"]) in known_custom, obj["kind"]
            continue
        if obj["apiVersion"].startswith(monitoring_crds.GROUP):
            assert not monitoring_crds.errors(obj), monitoring_crds.errors(obj)
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}"
            )


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_objects_are_labelled_and_namespaced(
    render: Callable[..., Rendering], value_set: str
) -> None:
    for obj in render(VALUE_SETS[value_set]).objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "ic"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] not in {"Role", "RoleBinding"}:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_common_labels(render: Callable[..., Rendering]) -> None:
    rendering = render({"commonLabels": {"team": "storage"}, **VALUE_SETS["agent-daemonset"]})
    assert all(o["metadata"]["labels"]["team"] == "storage" for o in rendering.objects)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_is_clean(helm: str, value_set: str) -> None:
    args: list[str] = []
    for key, value in VALUE_SETS[value_set].items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    result = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_crd_is_identical_to_the_source() -> None:
    source = REPO / "crds" / "imagecacherequests.yaml"
    copy = CHART / "crds" / "imagecacherequests.yaml"
    assert copy.read_bytes() == source.read_bytes(), (
        "charts/imagecache/crds/imagecacherequests.yaml differs from crds/; copy it over"
    )


def test_rendered_crds_are_the_chart_files(render: Callable[..., Rendering]) -> None:
    crds = render(include_crds=True).of_kind("CustomResourceDefinition")
    names = sorted(c["metadata"]["name"] for c in crds)
    assert names == ["imagecacherequests.imagecache.dev"], "no kopf peering CRDs any more"
    source = yaml.safe_load((REPO / "crds" / "imagecacherequests.yaml").read_text())
    assert [c for c in crds if c["metadata"]["name"] == source["metadata"]["name"]] == [source]


@pytest.mark.parametrize("values_file", EXAMPLE_VALUES, ids=lambda p: Path(p).name)
def test_example_values_render(render: Callable[..., Rendering], values_file: Path) -> None:
    rendering = render(files=[values_file])
    assert rendering.of_kind("Deployment"), "the operator is always rendered"


def crd_version() -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / "imagecacherequests.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def unbounded(node: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of lists without maxItems, maps without maxProperties, strings without a bound."""
    kind = node.get("type")
    if kind == "array":
        if "maxItems" not in node:
            yield path
        yield from unbounded(node["items"], f"{path}[]")
    elif kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in node:
                yield path
            yield from unbounded(extra, f"{path}.*")
        for key, child in node.get("properties", {}).items():
            yield from unbounded(child, f"{path}.{key}")
    elif kind == "string" and not ({"maxLength", "enum"} & node.keys()):
        yield path


def test_spec_is_bounded_so_cel_cost_is_bounded() -> None:
    """The API server refuses a CRD whose CEL rules may cost too much; bounds cap that cost."""
    spec = crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert list(unbounded(spec, "spec")) == []


def test_status_conditions_are_a_map_and_reason_is_a_column() -> None:
    version = crd_version()
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"], "a map key must be required"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Reason"] == ".status.reason"
    assert list(columns).index("Reason") == list(columns).index("Phase") + 1
