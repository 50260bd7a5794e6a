"""Finding and running a real ``kubectl`` against the emulator.

`kubectl_path` prefers the repository's ``.tools/bin/kubectl`` (what CI installs), then PATH;
tests that need kubectl skip with a clear reason when there is none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def kubectl_path() -> str | None:
    """The kubectl binary to use, or None when there is none."""
    local = REPO / ".tools" / "bin" / "kubectl"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("kubectl")


def require_kubectl() -> str:
    """The kubectl binary, or skip the calling test with the reason."""
    path = kubectl_path()
    if path is None:
        pytest.skip("kubectl is not installed (neither .tools/bin/kubectl nor on PATH)")
    return path


async def run_kubectl(
    kubeconfig: Path, *args: str, limit: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl ARGS`` against a kubeconfig in a worker thread; bounded by `limit` seconds."""
    binary = require_kubectl()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return await asyncio.to_thread(
        subprocess.run,
        [binary, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=limit,
        check=False,
    )
