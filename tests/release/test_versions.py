"""The one version (.ci/versions.py): in step in this repository, drift caught, set everywhere.

Covers: `check` passes on the repository as it is; every place that carries the version,
changed alone in a copy of the files, fails `check` with that place named; a tag other than
v<version> fails; `set X.Y.Z` rewrites every place (and nothing else) so that `check` passes
again; a malformed version or a missing file is refused with exit status 2 and nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "versions.py"
# What the script reads: the source, the chart, the package, the Dockerfile and the docs.
COPIED = (
    "pyproject.toml",
    "charts",
    "operator/imagecache/__init__.py",
    "operator/imagecache/agent/openapi.json",
    "Dockerfile",
    "README.md",
    "docs",
    "examples",
)
IMAGE_REF = re.compile(r"imagecache[:-]([0-9][0-9.]*[0-9])")


def current() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the files that carry the version."""
    for name in COPIED:
        source, target = REPO / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def image_refs(root: Path) -> list[str]:
    refs = []
    for path in [root / "README.md", *root.glob("docs/*.md"), *root.glob("examples/*.yaml")]:
        refs += IMAGE_REF.findall(path.read_text(encoding="utf-8"))
    return refs


def test_the_repository_is_in_step() -> None:
    result = run(REPO, "check")
    assert result.returncode == 0, result.stderr
    assert f"version {current()} everywhere" in result.stdout
    assert run(REPO, "get").stdout.strip() == current()


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# (file, text to find with {v} the version, its replacement, what the error names)
DRIFTS = [
    ("charts/imagecache/Chart.yaml", "\nversion: {v}", "\nversion: 9.9.9", "version:"),
    ("charts/imagecache/Chart.yaml", 'appVersion: "{v}"', 'appVersion: "9.9.9"', "appVersion"),
    ("operator/imagecache/__init__.py", '__version__ = "{v}"', '__version__ = "9.9.9"', ""),
    ("operator/imagecache/agent/openapi.json", '"version": "{v}"', '"version": "9.9.9"', "info"),
    ("Dockerfile", "ARG VERSION={v}", "ARG VERSION=9.9.9", "ARG VERSION"),
    ("charts/imagecache/values.yaml", '  tag: ""', '  tag: "9.9.9"', "image.tag"),
    ("docs/sidecar.md", "imagecache:{v}", "imagecache:9.9.9", ":36:"),
    ("docs/install.md", "--version {v}", "--version 9.9.9", "charts/imagecache --version 9.9.9"),
    ("docs/install.md", "imagecache-{v}.tgz", "imagecache-9.9.9.tgz", "imagecache-9.9.9.tgz"),
    ("docs/install.md", "image.tag={v}", "image.tag=9.9.9", "image.tag=9.9.9"),
    ("pyproject.toml", 'version = "{v}"', 'version = "9.9.9"', "Chart.yaml"),
]


@pytest.mark.parametrize(("path", "old", "new", "named"), DRIFTS, ids=[d[0] for d in DRIFTS])
def test_drift_in_any_one_place_fails_the_check(
    tree: Path, path: str, old: str, new: str, named: str
) -> None:
    assert run(tree, "check").returncode == 0
    replace_once(tree / path, old.format(v=current()), new)
    result = run(tree, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    if path != "pyproject.toml":
        assert path in result.stderr
    assert named in result.stderr


def test_the_tag_must_be_v_and_the_version(tree: Path) -> None:
    assert run(tree, "check", "--tag", f"v{current()}").returncode == 0
    for tag in ("v9.9.9", current(), f"v{current()}-rc.1"):
        result = run(tree, "check", "--tag", tag)
        assert result.returncode == 1, tag
        assert f"the git tag {tag!r} is not 'v{current()}'" in result.stderr


def test_set_writes_every_place_and_only_the_version(tree: Path) -> None:
    before = snapshot(tree)
    refs = image_refs(tree)
    assert refs and set(refs) == {current()}

    result = run(tree, "set", "2.30.4")
    assert result.returncode == 0, result.stderr
    assert "version 2.30.4 everywhere" in result.stdout
    assert run(tree, "check", "--tag", "v2.30.4").returncode == 0

    chart = yaml.safe_load((tree / "charts/imagecache/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == ("2.30.4", "2.30.4")
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    assert project["version"] == "2.30.4"
    openapi = json.loads((tree / "operator/imagecache/agent/openapi.json").read_text())
    assert openapi["info"]["version"] == "2.30.4"
    assert '__version__ = "2.30.4"' in (tree / "operator/imagecache/__init__.py").read_text()
    assert "ARG VERSION=2.30.4\n" in (tree / "Dockerfile").read_text()
    assert image_refs(tree) == ["2.30.4"] * len(refs)
    # Nothing but the version changed: putting the old one back gives the same bytes.
    after = snapshot(tree)
    old = current().encode()
    assert after.keys() == before.keys()
    for name, data in after.items():
        assert data.replace(b"2.30.4", old) == before[name], name


@pytest.mark.parametrize("bad", ["2.3", "v2.3.4", "02.3.4", "2.3.4-rc.1", "2.3.4\n", ""])
def test_set_refuses_a_malformed_version_and_writes_nothing(tree: Path, bad: str) -> None:
    before = snapshot(tree)
    result = run(tree, "set", bad)
    assert result.returncode == 2
    assert "is not MAJOR.MINOR.PATCH" in result.stderr
    assert snapshot(tree) == before


def test_a_missing_file_is_a_clear_error(tree: Path) -> None:
    (tree / "Dockerfile").unlink()
    result = run(tree, "check")
    assert result.returncode == 2
    assert "versions: Dockerfile: cannot read" in result.stderr
