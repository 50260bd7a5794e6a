"""One build of the OpenStack venv at a time (tests/openstack/venv.py).

Covers: while another holder has the lock (as a pytest-xdist worker, another checkout or
`.ci/run`'s flock(1) building the venv does), `one_build_at_a_time` waits, and gives up with
`VenvUnavailable` after its bound; once the holder lets go, it takes the lock. The lock here is
a file of the test's own, not the real one beside the venv. Needs no cloud.
"""

from __future__ import annotations

import fcntl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.openstack.venv import VenvUnavailable, one_build_at_a_time


def held_by_another(lock: Path) -> bool:
    with lock.open("ab") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def test_a_held_lock_is_waited_for_then_given_up_on(tmp_path: Path) -> None:
    lock = tmp_path / "venv.lock"
    # flock(1) in another process, as .ci/run holds it while the script builds; `cat` keeps
    # it until its stdin closes.
    holder = subprocess.Popen(["flock", str(lock), "cat"], stdin=subprocess.PIPE)
    assert holder.stdin is not None
    try:
        deadline = time.monotonic() + 10.0
        while not held_by_another(lock):
            assert time.monotonic() < deadline, "flock(1) did not take the lock"
            time.sleep(0.01)
        with pytest.raises(VenvUnavailable, match="held"), one_build_at_a_time(lock, within=0.3):
            pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with one_build_at_a_time(lock, within=5.0):
        pass


def test_the_lock_is_taken_once_the_holder_lets_go(tmp_path: Path) -> None:
    lock = tmp_path / "venv.lock"
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with one_build_at_a_time(lock, within=5.0):
            inside.set()
            release.wait(timeout=10.0)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(timeout=10.0)
        with lock.open("ab") as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the other thread
        release.set()
        with one_build_at_a_time(lock, within=10.0):
            pass
    finally:
        release.set()
        thread.join(timeout=10.0)
    assert not thread.is_alive()
