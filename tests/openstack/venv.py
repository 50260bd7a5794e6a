"""Locate (building on first use) the venv that holds Keystone, Glance, uWSGI and the CLI.

The venv lives outside the repository and is built by `.ci/openstack-venv.sh`, which is a
no-op once built. This module only runs that script and names the programs inside the venv.
Every pytest-xdist worker collects, so every worker asks for the venv, and other checkouts on
the machine share it: the script runs under an exclusive lock on `BUILD_LOCK` beside the venv
(bounded wait; `.ci/run` takes the same lock with flock(1)), so one builds and the others find
it built, where two builds at once would each delete and fill the same directory.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / ".ci" / "openstack-venv.sh"
BUILD_TIMEOUT = 1200.0  # seconds; a cold build takes one to two minutes on 2 cores
# Where the script builds the venv (the same default and variable as .ci/openstack-venv.sh).
VENV_DIR = Path(
    os.environ.get("IMAGECACHE_OPENSTACK_VENV")
    or Path.home() / ".cache" / "imagecache" / "openstack-venv"
)
BUILD_LOCK = VENV_DIR.with_name(VENV_DIR.name + ".lock")


class VenvUnavailable(RuntimeError):
    """The OpenStack venv could not be built or found; the message says why."""


@dataclass(frozen=True)
class OpenStackVenv:
    """The venv holding keystone 30, glance 33, uwsgi and python-openstackclient."""

    path: Path

    def bin(self, name: str) -> Path:
        """A program installed in the venv (`keystone-manage`, `uwsgi`, `openstack`, ...)."""
        return self.path / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")

    @property
    def site_packages(self) -> Path:
        found = sorted(self.path.glob("lib/python3*/site-packages"))
        if not found:
            raise VenvUnavailable(f"no site-packages under {self.path}")
        return found[0]


@contextmanager
def one_build_at_a_time(path: Path = BUILD_LOCK, *, within: float) -> Iterator[None]:
    """Hold the exclusive lock `path`; wait for it at most `within` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as lock:
        deadline = time.monotonic() + within
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VenvUnavailable(
                        f"another process held {path} for over {within:g}s"
                    ) from None
                time.sleep(0.5)  # polling a lock another process holds; bounded above
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_venv() -> OpenStackVenv:
    """Run the build script (a no-op when the venv is up to date) and return the venv."""
    try:
        with one_build_at_a_time(within=BUILD_TIMEOUT):
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise VenvUnavailable(f"{BUILD_SCRIPT} did not finish: {error}") from error
    if done.returncode != 0:
        raise VenvUnavailable(
            f"{BUILD_SCRIPT} exited with {done.returncode}:\n{done.stderr[-4000:]}"
        )
    venv = OpenStackVenv(Path(done.stdout.strip().splitlines()[-1]))
    for program in ("uwsgi", "keystone-manage", "glance-manage", "openstack"):
        if not venv.bin(program).exists():
            raise VenvUnavailable(f"{venv.bin(program)} is missing; delete {venv.path}")
    return venv
