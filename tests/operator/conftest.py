"""Fixtures of the operator's end-to-end tests: images on an upstream, agents, the operator.

Covers: `images` (an HTTP upstream in a thread with small images), `token_file`, `agents`
(an `AgentPool`), `operator` (a running in-process operator against the `kube` emulator).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kube.emulator import Emulator
from tests.operator.harness import TOKEN, AgentPool, RunningOperator, start_operator
from tests.support.upstreams import HttpFileServer


@pytest.fixture
def upstream() -> Iterator[HttpFileServer]:
    """An HTTP upstream (serving from its own thread) the agents fetch images from."""
    server = HttpFileServer()
    with server.running_in_thread():
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The token file the operator sends to agents."""
    path = tmp_path / "agent-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def agents(tmp_path: Path, upstream: HttpFileServer) -> Iterator[AgentPool]:
    """Agents accept `TOKEN` from a file of their own (the operator's file may change)."""
    accepted = tmp_path / "agents-accept"
    accepted.write_text(TOKEN + "\n")
    pool = AgentPool(root=tmp_path / "agents", upstream=upstream.upstream, token_file=accepted)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest_asyncio.fixture
async def operator(kube: Emulator, token_file: Path) -> AsyncIterator[RunningOperator]:
    running = await start_operator(kube, token_file=token_file)
    try:
        yield running
    finally:
        await running.stop()
