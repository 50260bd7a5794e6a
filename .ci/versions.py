#!/usr/bin/env python3
"""One release version, kept in step everywhere it is written.

The source is ``[project].version`` in pyproject.toml. Every other place that names the release
must say the same (``check``), and ``set X.Y.Z`` rewrites all of them at once:

- charts/imagecache/Chart.yaml ``version`` and ``appVersion`` (the chart is released with the
  image, as cert-manager does); values.yaml ``image.tag`` stays ``""``, which means appVersion;
- ``imagecache.__version__`` (operator/imagecache/__init__.py);
- the agent's API document, operator/imagecache/agent/openapi.json ``info.version``;
- the Dockerfile's ``ARG VERSION`` default (the image's org.opencontainers.image.version label);
- every image (``ghcr.io/imagecache/imagecache:X.Y.Z``, ``imagecache:X.Y.Z``), chart archive
  (``imagecache-X.Y.Z.tgz``), ``charts/imagecache --version X.Y.Z``, ``--build-arg
  VERSION=X.Y.Z`` and ``image.tag=X.Y.Z`` in README.md, docs/ and examples/.

``check --tag vX.Y.Z`` also fails unless the git tag is exactly ``v`` + the version (the release
workflow runs it on the tag it was started by). Standard library only, so that it runs on a bare
CI runner. Exit status: 0 in step, 1 drift (each difference printed), 2 bad usage or input.

    python3 .ci/versions.py check [--tag v0.2.0]
    python3 .ci/versions.py get
    python3 .ci/versions.py set 0.2.0        # or: make release-version VERSION=0.2.0
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# SemVer 2 core, which is also PEP 440's normal form: what both Helm and pip accept unchanged.
VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")  # fullmatch
# Any version-looking reference in docs (never swallows a full stop ending a sentence).
ANY_VERSION = r"[0-9]+(?:\.[0-9]+)*(?:[-+][0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?"

PYPROJECT = "pyproject.toml"
CHART = "charts/imagecache/Chart.yaml"
VALUES = "charts/imagecache/values.yaml"
INIT = "operator/imagecache/__init__.py"
OPENAPI = "operator/imagecache/agent/openapi.json"
DOCKERFILE = "Dockerfile"
DOC_GLOBS = ("README.md", "docs/**/*.md", "examples/**/*.yaml", "examples/**/*.md")

# How docs name a release; group 1 is the version (the context is look-around), as in every
# pattern here: images (ghcr.io/imagecache/imagecache:X, imagecache:X, .../charts/imagecache:X),
# chart archives and image tarballs, `--version X` after the chart, build and --set arguments.
DOC_REFS = tuple(
    re.compile(before + "(" + ANY_VERSION + ")" + after)
    for before, after in (
        (r"(?<=imagecache:)", ""),
        (r"(?<=imagecache-)", r"(?=\.(?:tgz|tar)\b)"),
        (r"(?<=charts/imagecache --version )", ""),
        (r"(?<=--build-arg VERSION=)", ""),
        (r"(?<=image\.tag=)", ""),
    )
)


class UsageError(Exception):
    """Input the script cannot work with: a missing file, an unreadable field, a bad version."""


@dataclass(frozen=True)
class Field:
    """One place in one file that holds the version, matched by a one-group regex."""

    path: str
    what: str
    pattern: re.Pattern[str]

    def read(self, root: Path) -> str:
        matches = self.pattern.findall(read_text(root, self.path))
        if len(matches) != 1:
            raise UsageError(f"{self.path}: expected one {self.what}, found {len(matches)}")
        return str(matches[0])

    def write(self, root: Path, version: str) -> None:
        text = read_text(root, self.path)
        new, count = self.pattern.subn(lambda m: swap_group(m, version), text)
        if count != 1:
            raise UsageError(f"{self.path}: expected one {self.what}, found {count}")
        (root / self.path).write_text(new, encoding="utf-8")


def swap_group(match: re.Match[str], value: str) -> str:
    """The whole match with its group 1 replaced by ``value``."""
    start, end = match.span(1)
    base = match.start(0)
    whole = match.group(0)
    return whole[: start - base] + value + whole[end - base :]


FIELDS = (
    Field(CHART, "top-level version:", re.compile(r'^version:[ \t]*"?([^"\s]*)"?[ \t]*$', re.M)),
    Field(
        CHART, "top-level appVersion:", re.compile(r'^appVersion:[ \t]*"?([^"\s]*)"?[ \t]*$', re.M)
    ),
    Field(INIT, "__version__ = ...", re.compile(r'^__version__ = "([^"]*)"$', re.M)),
    Field(DOCKERFILE, "ARG VERSION=...", re.compile(r"^ARG VERSION=(\S*)$", re.M)),
)


def read_text(root: Path, path: str) -> str:
    try:
        return (root / path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror})") from None


def source_version(root: Path) -> str:
    """``[project].version`` from pyproject.toml, refused unless it is X.Y.Z."""
    try:
        project = tomllib.loads(read_text(root, PYPROJECT))["project"]
        version = project["version"]
    except (tomllib.TOMLDecodeError, KeyError) as error:
        raise UsageError(f"{PYPROJECT}: no readable [project].version ({error})") from None
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise UsageError(f"{PYPROJECT}: version {version!r} is not MAJOR.MINOR.PATCH")
    return version


def openapi_version(root: Path) -> str:
    try:
        version = json.loads(read_text(root, OPENAPI))["info"]["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"{OPENAPI}: no readable info.version ({error})") from None
    return str(version)


def image_tag(root: Path) -> str:
    """values.yaml ``image.tag``: the ``tag:`` line inside the top-level ``image:`` block."""
    text = read_text(root, VALUES)
    block = re.search(r"^image:[ \t]*\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.M)
    if block is None:
        raise UsageError(f"{VALUES}: no top-level image: block")
    tag = re.search(r'^  tag:[ \t]*"?([^"\s]*)"?[ \t]*$', block.group(1), re.M)
    if tag is None:
        raise UsageError(f"{VALUES}: no image.tag")
    return tag.group(1)


def swap_doc_refs(text: str, version: str) -> str:
    for ref in DOC_REFS:
        text = ref.sub(lambda m: swap_group(m, version), text)
    return text


def doc_files(root: Path) -> Iterator[Path]:
    seen: set[Path] = set()
    for pattern in DOC_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and path not in seen:
                seen.add(path)
                yield path


def drift(root: Path, tag: str | None) -> tuple[str, list[str]]:
    """The source version and every place that says something else."""
    version = source_version(root)
    problems = []
    for field in FIELDS:
        found = field.read(root)
        if found != version:
            problems.append(f"{field.path}: {field.what} says {found!r}")
    found = openapi_version(root)
    if found != version:
        problems.append(f"{OPENAPI}: info.version says {found!r}")
    found = image_tag(root)
    if found not in ("", version):
        problems.append(f'{VALUES}: image.tag says {found!r} (keep it "": the appVersion)')
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            for ref in DOC_REFS:
                for match in ref.finditer(line):
                    if match.group(1) != version:
                        where = path.relative_to(root)
                        problems.append(f"{where}:{lineno}: {line.strip()!r}")
    if tag is not None and tag != f"v{version}":
        problems.append(f"the git tag {tag!r} is not 'v{version}'")
    return version, problems


def set_version(root: Path, version: str) -> list[str]:
    """Write ``version`` everywhere; returns the files changed."""
    if not VERSION_RE.fullmatch(version):
        raise UsageError(f"version {version!r} is not MAJOR.MINOR.PATCH (e.g. 0.2.0)")
    source_version(root)  # refuses an unreadable pyproject.toml before anything is written
    changed: set[str] = set()

    def rewrite(path: str, edit: Callable[[str], str]) -> None:
        text = read_text(root, path)
        new = edit(text)
        if new != text:
            (root / path).write_text(new, encoding="utf-8")
            changed.add(path)

    rewrite(
        PYPROJECT,
        lambda t: re.sub(
            r'(?ms)(^\[project\]$.*?^version = ")[^"]*(")',
            lambda m: m.group(1) + version + m.group(2),
            t,
            count=1,
        ),
    )
    for field in FIELDS:
        before = read_text(root, field.path)
        field.write(root, version)
        if read_text(root, field.path) != before:
            changed.add(field.path)
    rewrite(
        OPENAPI,
        lambda t: re.sub(
            r'("info": \{[^{}]*?"version": ")[^"]*(")',
            lambda m: m.group(1) + version + m.group(2),
            t,
            count=1,
        ),
    )
    for path in doc_files(root):
        rel = str(path.relative_to(root))
        rewrite(rel, lambda t: swap_doc_refs(t, version))
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="fail when any place differs from pyproject.toml")
    check.add_argument("--tag", help="a git tag that must be v<version> (e.g. v0.2.0)")
    commands.add_parser("get", help="print the version")
    setter = commands.add_parser("set", help="write a new version everywhere")
    setter.add_argument("version")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        if args.command == "get":
            print(source_version(root))
            return 0
        if args.command == "set":
            for path in set_version(root, args.version):
                print(f"updated {path}")
        version, problems = drift(root, getattr(args, "tag", None))
    except UsageError as error:
        print(f"versions: {error}", file=sys.stderr)
        return 2
    if problems:
        print(f"versions: these differ from {PYPROJECT}'s version {version}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print("  fix: python3 .ci/versions.py set <version>", file=sys.stderr)
        return 1
    print(f"version {version} everywhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
