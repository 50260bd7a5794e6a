"""The GitHub workflows: actionlint clean, actions pinned by commit, least privilege on release.

Covers: actionlint (with shellcheck on every `run:` script) passes on .github/workflows and
fails on a copy with an undefined job output or an unquoted variable, so the lint in .ci/run is
live; every `uses:` of a remote action names a full commit with its release tag in a comment;
the release workflow starts only on v* tags, grants nothing at the top, and gives each write
permission only to the job whose steps need it; its version job checks the tag.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
RELEASE = REPO / ".github" / "workflows" / "release.yml"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+\s*$")


def tool(name: str) -> str:
    path = os.pathsep.join([str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        pytest.skip(f"{name} not found (pip install -e '.[dev]')")
    return found


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = Path(tool("shellcheck")).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(shellcheck), os.environ.get("PATH", "")])}
    return subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )


def test_actionlint_passes_on_every_workflow() -> None:
    assert WORKFLOWS, "no workflows found"
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "reported"),
    [
        ("needs.version.outputs.image }}", "needs.version.outputs.imgae }}", '"imgae"'),
        ('echo "digest=${digest}"', "echo digest=$digest", "SC2086"),
    ],
    ids=["undefined-output", "shellcheck"],
)
def test_actionlint_fails_on_a_broken_copy(
    tmp_path: Path, old: str, new: str, reported: str
) -> None:
    text = RELEASE.read_text()
    assert old in text
    broken = tmp_path / "release.yml"
    broken.write_text(text.replace(old, new))
    result = actionlint(broken)
    assert result.returncode == 1
    assert reported in result.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit(workflow: Path) -> None:
    for lineno, line in enumerate(workflow.read_text().splitlines(), 1):
        if re.match(r"^\s*(?:-\s+)?uses:", line) and "uses: ./" not in line:
            assert PINNED.match(line), f"{workflow.name}:{lineno}: not pinned: {line.strip()}"


def release() -> dict[Any, Any]:
    loaded = yaml.safe_load(RELEASE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def steps_text(job: dict[str, Any]) -> str:
    """Every step's action and script, one after the other."""
    return "\n".join(f"{s.get('uses', '')}\n{s.get('run', '')}" for s in job.get("steps", []))


def test_release_starts_on_version_tags_only_with_no_default_permissions() -> None:
    workflow = release()
    # PyYAML reads the key `on` as True.
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {}


def test_release_jobs_have_least_privilege() -> None:
    jobs = release()["jobs"]
    for name, job in jobs.items():
        permissions = job["permissions"]
        text = steps_text(job)
        writes = {k for k, v in permissions.items() if v == "write"}
        expected = set()
        if "docker/build-push-action" in text or "helm push" in text:
            expected.add("packages")
        if "actions/attest@" in text:
            expected |= {"id-token", "attestations"}
        if "gh release create" in text:
            expected.add("contents")
        assert writes == expected, name
    assert jobs["version"]["permissions"] == {"contents": "read"}


def test_the_version_job_checks_the_tag_and_everything_waits_for_it() -> None:
    jobs = release()["jobs"]
    assert '.ci/versions.py check --tag "${GITHUB_REF_NAME}"' in steps_text(jobs["version"])
    for name, job in jobs.items():
        if name != "version":
            assert "version" in job["needs"], name
    build = next(s for s in jobs["image"]["steps"] if "build-push-action" in s.get("uses", ""))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
