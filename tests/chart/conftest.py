"""Fixtures for the Helm chart tests: find `helm`, render the chart, pick objects out.

Covers: locating a real `helm` binary (.tools/bin first, then PATH; the whole directory is
skipped with a clear reason without one) and `helm template` rendered into a list of objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "imagecache"
RELEASE = "ic"
NAMESPACE = "imagecache-system"
HELM_TIMEOUT = 60

Manifest = dict[str, Any]


def find_helm() -> str | None:
    """The helm binary installed by .ci/install-k8s-tools.sh, else one on PATH."""
    path = os.pathsep.join([str(REPO / ".tools" / "bin"), os.environ.get("PATH", "")])
    return shutil.which("helm", path=path)


@pytest.fixture(scope="session")
def helm() -> str:
    binary = find_helm()
    if binary is None:
        pytest.skip("helm not found in .tools/bin or PATH (run .ci/install-k8s-tools.sh)")
    return binary


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with a bounded time; never raises on a non-zero exit (callers check)."""
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=HELM_TIMEOUT, check=False
    )


@dataclass(frozen=True)
class Rendering:
    """The objects one `helm template` produced, with lookups by kind and name."""

    objects: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)


def template(
    helm: str,
    values: dict[str, Any] | None = None,
    *,
    files: Sequence[Path] = (),
    include_crds: bool = False,
) -> Rendering:
    """Render the chart; `values` maps dotted keys to JSON values (`--set-json`)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if include_crds:
        args.append("--include-crds")
    for file in files:
        args += ["-f", str(file)]
    result = run_helm(helm, *args, *values_args_each(values))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Rendering(objects)


def values_args_each(values: dict[str, Any] | None) -> list[str]:
    """One `--set-json key=value` pair per entry (helm takes one pair per flag)."""
    args: list[str] = []
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def template_error(helm: str, values: dict[str, Any]) -> str:
    """Render with values that must be refused; return helm's error text."""
    result = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *values_args_each(values),
    )
    assert result.returncode != 0, f"helm accepted values it must refuse: {values}"
    return result.stderr


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., Rendering]:
    def _render(
        values: dict[str, Any] | None = None,
        *,
        files: Sequence[Path] = (),
        include_crds: bool = False,
    ) -> Rendering:
        return template(helm, values, files=files, include_crds=include_crds)

    return _render


def containers(workload: Manifest) -> Iterator[Manifest]:
    """Every container and init container of a workload's pod template."""
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: Manifest) -> dict[str, str]:
    """A container's literal environment (valueFrom entries are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
