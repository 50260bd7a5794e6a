"""A full disk under a real agent process: a small real tmpfs as the cache directory's filesystem.

Covers (issue 11 "disk full"; SPEC §2.5 "disk full" is a permanent failure, §2.7 readiness):
- with the filesystem 100 % full, ``PUT`` answers a Glance-shaped 507 (the queue cannot be
  written) or 202 and the image then fails with reason ``disk full`` — never a bare 500 — and
  ``/readyz`` is 503 with ``cache_dir`` false; once space is freed, readiness comes back and the
  next ``PUT`` caches the image;
- an agent started on a 100 % full disk starts (no crash loop), serves the images it has
  cached, and reports not ready until there is room again.

Needs root and mount(8) for the tmpfs; skipped with the reason otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.faults_client import AgentClient, wait_until
from tests.support.agents import AgentProcess

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(filesystem: Path) -> Path:
    """Write a filler file until the filesystem refuses one more byte; return its path."""
    filler = filesystem / "filler"
    block = b"\xa5" * (64 * KiB)
    with filler.open("wb", buffering=0) as handle:
        for size in (len(block), 4 * KiB, 1):
            try:
                while True:
                    handle.write(block[:size])
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "upstream"
    directory.mkdir()
    for name, size in (("cached", 1 * MiB), ("later", 512 * KiB), ("another", 256 * KiB)):
        (directory / name).write_bytes(os.urandom(size))
    return directory


def start(cache_dir: Path, upstream_dir: Path) -> tuple[AgentProcess, AgentClient]:
    agent = AgentProcess(
        cache_dir=cache_dir,
        upstream=f"file://{upstream_dir}",
        log_path=upstream_dir.parent / "agent.log",
        extra_args=["--retries", "1"],
    )
    agent.start()
    return agent, AgentClient(agent.host, agent.port)


def readiness(client: AgentClient) -> tuple[int, dict[str, bool]]:
    reply = client.call("GET", "/readyz")
    return reply.status, reply.json()["checks"]


def test_full_disk_put_is_a_clear_error_and_readiness_follows_the_disk(
    small_fs: Path, upstream_dir: Path
) -> None:
    agent, client = start(small_fs / "cache", upstream_dir)
    try:
        assert readiness(client)[0] == 200
        filler = fill(small_fs)

        status, checks = readiness(client)
        assert status == 503 and checks["cache_dir"] is False, checks
        reply = client.queue("later")
        assert reply.status in (202, 507), reply
        if reply.status == 507:
            assert reply.json()["code"] == "507 Insufficient Storage"
        else:  # the queue still had room in its journal: the download then fails for good
            report = client.wait_for_state("later", {"failed", "cached"})
            assert report["state"] == "failed" and report["error"] == "disk full", report
        assert "Traceback" not in agent.logs()

        filler.unlink()
        wait_until(lambda: readiness(client)[0] == 200 or None, timeout=10, what="ready again")
        assert client.queue("another").status == 202
        assert client.wait_for_state("another", {"failed", "cached"})["state"] == "cached"
    finally:
        agent.kill()


def test_agent_starts_on_a_full_disk_and_serves_what_it_has(
    small_fs: Path, upstream_dir: Path
) -> None:
    cache_dir = small_fs / "cache"
    agent, client = start(cache_dir, upstream_dir)
    try:
        assert client.queue("cached").status == 202
        assert client.wait_for_state("cached", {"failed", "cached"})["state"] == "cached"
    finally:
        assert agent.stop() == 0
    filler = fill(small_fs)

    agent, client = start(cache_dir, upstream_dir)  # raises if the agent exits instead
    try:
        served = client.call("GET", "/v2/images/cached/file")
        assert served.status == 200
        assert served.body == (upstream_dir / "cached").read_bytes()
        status, checks = readiness(client)
        assert status == 503 and checks["cache_dir"] is False, checks
        assert client.queue("later").status in (202, 507)

        filler.unlink()
        wait_until(lambda: readiness(client)[0] == 200 or None, timeout=10, what="ready again")
    finally:
        agent.kill()
