"""Pytest fixtures for the Kubernetes API emulator.

Register with ``pytest_plugins = ["tests.kube.fixtures"]``. Covers: ``kube`` — a fresh emulator
per test (own thread and event loop), the ImageCacheRequest CRD loaded, namespace ``default``
existing, a kubeconfig file, and a `KubeClient` bound to the test's event loop; ``k8s`` —
the official ``kubernetes`` client's ApiClient for that emulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import kubernetes
import pytest
import pytest_asyncio

from tests.kube.emulator import Emulator, run_emulator


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Emulator]:
    """A running strict emulator: ``.url``, ``.kubeconfig`` (Path), ``.client`` (KubeClient)."""
    async with run_emulator(workdir=tmp_path / "kube") as emulator:
        yield emulator


@pytest.fixture
def k8s(kube: Emulator) -> Iterator[kubernetes.client.ApiClient]:
    """The official ``kubernetes`` client, configured from the emulator's kubeconfig."""
    with kube.official_client() as api:
        yield api
