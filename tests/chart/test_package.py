"""The packaged chart, as the release workflow pushes it (`helm package`, then `helm push`).

Covers: `helm package` of charts/imagecache makes imagecache-<version>.tgz, where <version> is
pyproject.toml's (the one version); the archive's Chart.yaml carries it as version and
appVersion; the archive passes `helm lint --strict` and renders the operator with the image
tagged by that version (values.yaml's empty tag means appVersion).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from tests.chart.conftest import CHART, REPO, run_helm


def test_helm_package_carries_the_one_version(helm: str, tmp_path: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    archive = tmp_path / f"imagecache-{version}.tgz"
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]

    shown = run_helm(helm, "show", "chart", str(archive))
    assert shown.returncode == 0, shown.stderr
    chart = yaml.safe_load(shown.stdout)
    assert (chart["name"], chart["version"], chart["appVersion"]) == (
        "imagecache",
        version,
        version,
    )

    lint = run_helm(helm, "lint", "--strict", str(archive))
    assert lint.returncode == 0, lint.stdout + lint.stderr

    rendered = run_helm(helm, "template", "ic", str(archive), "--namespace", "imagecache-system")
    assert rendered.returncode == 0, rendered.stderr
    (operator,) = [
        doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-operator")
    ]
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/imagecache/imagecache:{version}"
