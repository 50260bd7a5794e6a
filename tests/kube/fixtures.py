"""Pytest fixtures for the Kubernetes API emulator.

Register with ``pytest_plugins = ["tests.kube.fixtures"]``. Covers: ``kube`` — a fresh emulator
per test (own thread and event loop), the ImageCacheRequest CRD loaded, namespace ``default``
existing, a kubeconfig file, and a `KubeClient` bound to the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.kube.emulator import Emulator, run_emulator


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Emulator]:
    """A running strict emulator: ``.url``, ``.kubeconfig`` (Path), ``.client`` (KubeClient)."""
    async with run_emulator(workdir=tmp_path / "kube") as emulator:
        yield emulator
