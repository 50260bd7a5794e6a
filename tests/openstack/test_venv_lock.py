"""One build of the OpenStack venv at a time (tests/openstack/venv.py).

Covers: while another holder has the build script locked (as a pytest-xdist worker building the
venv does), `one_build_at_a_time` waits, and gives up with `VenvUnavailable` after its bound;
once the holder lets go, it takes the lock. Needs no cloud.
"""

from __future__ import annotations

import fcntl
import threading

import pytest

from tests.openstack.venv import BUILD_SCRIPT, VenvUnavailable, one_build_at_a_time


def test_a_held_lock_is_waited_for_then_given_up_on() -> None:
    with BUILD_SCRIPT.open("rb") as other:  # another open file: another holder, as flock sees it
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(VenvUnavailable, match="held"), one_build_at_a_time(within=0.3):
            pass
        fcntl.flock(other, fcntl.LOCK_UN)
    with one_build_at_a_time(within=0.3):
        pass


def test_the_lock_is_taken_once_the_holder_lets_go() -> None:
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with one_build_at_a_time(within=5.0):
            inside.set()
            release.wait(timeout=10.0)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(timeout=10.0)
        with BUILD_SCRIPT.open("rb") as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the other thread
        release.set()
        with one_build_at_a_time(within=10.0):
            pass
    finally:
        release.set()
        thread.join(timeout=10.0)
    assert not thread.is_alive()
