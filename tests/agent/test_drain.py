"""SIGTERM drains downloads (``drain_timeout``), against a real agent process.

Covers (issue 11, "drain_timeout claims SIGTERM waits for downloads"):
- a download that finishes within the drain window finishes and is committed: after the
  restart the image is cached at once, fetched from the upstream exactly once;
- a download that cannot finish in the window stops at its end (exit 0 in time) and resumes
  from its partial file at the next start (also in test_faults).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.faults_client import AgentClient, wait_until
from tests.agent.faults_upstream import ThrottledServer
from tests.support.agents import AgentProcess

MiB = 1024 * 1024


@pytest.fixture
def upstream() -> Iterator[ThrottledServer]:
    server = ThrottledServer()
    with server.running_in_thread():
        yield server


def test_sigterm_lets_a_download_finish_within_drain_timeout(
    tmp_path: Path, upstream: ThrottledServer
) -> None:
    image_id, data = "drain-me", random.Random("drain").randbytes(3 * MiB)
    upstream.add(image_id, data)
    upstream.throttle[image_id] = 2 * MiB  # bytes/s: ~1.5 s, far less than the drain window
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=upstream.upstream,
        extra_args=["--drain-timeout", "30", "--workers", "1"],
    )
    agent.start()
    try:
        client = AgentClient(agent.host, agent.port)
        partial = agent.cache_dir / "incomplete" / image_id
        assert client.queue(image_id).status == 202
        wait_until(
            lambda: True if partial.exists() and partial.stat().st_size > 0 else None,
            timeout=10,
            what="the first bytes on disk",
        )
        started = time.monotonic()
        assert agent.stop(timeout=40) == 0
        assert time.monotonic() - started < 30, "drain waited past the download's end"
        assert (agent.cache_dir / "images" / image_id).read_bytes() == data

        agent.start()
        assert client.state(image_id)["state"] == "cached"
        assert upstream.count("GET", image_id) == 1
    finally:
        agent.kill()
        print(f"--- agent log (tail) ---\n{agent.logs()[-3000:]}")
