"""Stopping a real agent process with SIGTERM at any moment of its life.

Covers (SPEC §2.7 "SIGTERM drains ... exits 0"; issue 11 "`timeout 4 imagecache-agent` sometimes
ends with Event loop stopped before Future completed"): 20 agents, each stopped the way
``timeout`` stops its command — SIGTERM to the process, then to its process group, so it arrives
twice — at a random moment up to `LATEST` after the Python interpreter is up (during imports,
settings, cache opening or serving), exit 0 within the grace period, and stderr has neither that
error nor any traceback. (web.run_app turned the first signal into an exception and the second,
landing in its cleanup, stopped the loop under a pending future.)

The moment is measured from when the interpreter is up (it catches SIGINT from then on, visible
in ``/proc/<pid>/status``). A signal sent within `EARLIEST` of that, before the process shows a
SIGTERM handler, is sent again once it does: no program can catch a signal before installing a
handler, and under load the interpreter alone can take that long. Three agents run at a time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agents import free_port

ROUNDS = 20
LATEST = 2.5
"""Latest moment, in seconds after the interpreter is up, at which SIGTERM is sent."""
EARLIEST = 0.8
"""Before this, a signal that finds no SIGTERM handler yet is sent again once there is one."""
GRACE = 20.0


@dataclass
class Round:
    delay: float
    returncode: int
    stderr: str


def _caught_signals(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def _catches(pid: int, signum: int) -> bool:
    return bool(_caught_signals(pid) & (1 << (signum - 1)))


def _wait_for(condition: object, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _one_round(tmp_path: Path, number: int, delay: float) -> Round:
    command = [
        sys.executable,
        "-m",
        "imagecache.agent",
        "--upstream",
        f"file://{tmp_path}",
        "--cache-dir",
        str(tmp_path / f"cache{number}"),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--drain-timeout",
        "5",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _wait_for(lambda: _catches(process.pid, signal.SIGINT), "the interpreter")
        up = time.monotonic()
        time.sleep(delay)
        if time.monotonic() - up < EARLIEST and not _catches(process.pid, signal.SIGTERM):
            _wait_for(lambda: _catches(process.pid, signal.SIGTERM), "a SIGTERM handler")
        process.send_signal(signal.SIGTERM)  # as timeout(1) does: the child, then its group
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=GRACE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return Round(delay=delay, returncode=process.returncode, stderr=stderr.decode(errors="replace"))


@pytest.mark.slow
def test_sigterm_at_any_moment_exits_0_without_loop_errors(tmp_path: Path) -> None:
    rng = random.Random()
    delays = [rng.uniform(0, LATEST) for _ in range(ROUNDS)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        rounds = list(
            pool.map(lambda args: _one_round(tmp_path, *args), enumerate(delays), timeout=100)
        )
    for result in rounds:
        assert "Event loop stopped" not in result.stderr, result
        assert "Traceback" not in result.stderr, result
        assert result.returncode == 0, result
