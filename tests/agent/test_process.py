"""The agent as a real process (tests/support/agents.py) over a real HTTP upstream.

Covers: ``kill -9`` mid-download then restart → the download resumes with ``Range`` from the
bytes in ``incomplete/`` and the image is complete and correct; a restart never lists a partial
image; a queued image survives ``kill -9`` (durable queue); SIGTERM drains and exits 0 with a
download in flight (which resumes at the next start); bad settings exit non-zero with one line
naming the setting (a file-path setting naming no readable file too: ``--listen 0.0.0.0
--token-file /missing`` refuses to start); a non-loopback listen address without a token file is
refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import IMAGE_A, IMAGE_B, payload
from tests.support.agents import AgentProcess
from tests.support.upstreams import Faults, HttpFileServer


def call(agent: AgentProcess, method: str, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{agent.url}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def report(agent: AgentProcess, image_id: str) -> dict[str, Any]:
    status, body = call(agent, "GET", f"/v2/cache/{image_id}")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def upstream() -> Any:
    server = HttpFileServer()
    with server.running_in_thread():
        yield server


def test_kill_9_mid_download_resumes(tmp_path: Path, upstream: HttpFileServer) -> None:
    data = payload(3_000_000)
    upstream.add(IMAGE_A, data)
    upstream.faults[IMAGE_A] = Faults(stall_after=1_000_000, stall_seconds=60)
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=upstream.upstream,
        extra_args=["--retry-backoff", "0.05"],
    )
    agent.start()
    try:
        assert call(agent, "PUT", f"/v2/cache/{IMAGE_A}")[0] == 202
        wait_until(lambda: report(agent, IMAGE_A)["bytes"] >= 1_000_000, what="1 MB on disk")
        agent.kill()
        partial = tmp_path / "cache" / "incomplete" / IMAGE_A
        assert partial.stat().st_size == 1_000_000
        upstream.faults[IMAGE_A] = Faults()
        upstream.release_stalls()
        agent.start()
        final = wait_until(
            lambda: (r := report(agent, IMAGE_A))["state"] in ("cached", "failed") and r,
            what="cached after restart",
        )
        assert final["state"] == "cached", final
        assert (tmp_path / "cache" / "images" / IMAGE_A).read_bytes() == data
        ranges = [s.range for s in upstream.requests if s.method == "GET"]
        assert ranges == [None, "bytes=1000000-"]
    finally:
        agent.kill()


def test_restart_never_lists_partials_and_keeps_queue(
    tmp_path: Path, upstream: HttpFileServer
) -> None:
    upstream.add(IMAGE_A, payload(2_000_000))
    upstream.add(IMAGE_B, payload(100_000, 2))
    upstream.default_faults = Faults(stall_after=500_000, stall_seconds=60)
    agent = AgentProcess(
        cache_dir=tmp_path / "cache", upstream=upstream.upstream, extra_args=["--workers", "1"]
    )
    agent.start()
    try:
        assert call(agent, "PUT", f"/v2/cache/{IMAGE_A}")[0] == 202
        wait_until(lambda: report(agent, IMAGE_A)["bytes"] >= 500_000, what="partial A")
        assert call(agent, "PUT", f"/v2/cache/{IMAGE_B}")[0] == 202  # waits behind A
        agent.kill()
        agent.start()
        _, body = call(agent, "GET", "/v2/cache")
        listing = json.loads(body)
        assert listing["cached_images"] == []
        assert listing["queued_images"] == [IMAGE_A, IMAGE_B]
        upstream.default_faults = Faults()
        upstream.release_stalls()
        for image_id in (IMAGE_A, IMAGE_B):
            wait_until(lambda i=image_id: report(agent, i)["state"] == "cached", what=image_id)
    finally:
        agent.kill()


def test_sigterm_drains_and_exits_0(tmp_path: Path, upstream: HttpFileServer) -> None:
    upstream.add(IMAGE_A, payload(1_000_000))
    upstream.faults[IMAGE_A] = Faults(stall_after=300_000, stall_seconds=60)
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=upstream.upstream,
        extra_args=["--drain-timeout", "5"],
    )
    agent.start()
    try:
        assert call(agent, "PUT", f"/v2/cache/{IMAGE_A}")[0] == 202
        wait_until(lambda: report(agent, IMAGE_A)["state"] == "caching", what="caching")
        started = time.monotonic()
        assert agent.stop(timeout=20) == 0
        assert time.monotonic() - started < 10
        upstream.faults[IMAGE_A] = Faults()
        upstream.release_stalls()
        agent.start()
        wait_until(lambda: report(agent, IMAGE_A)["state"] == "cached", what="resumed")
    finally:
        agent.kill()


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        pytest.param([], "upstream", id="missing-upstream"),
        pytest.param(["--upstream", "ftp://x/"], "upstream", id="bad-scheme"),
        pytest.param(
            ["--upstream", "file:///tmp", "--max-size", "lots"], "max_size", id="bad-size"
        ),
        pytest.param(["--upstream", "file:///tmp", "--workers", "0"], "workers", id="no-workers"),
        pytest.param(["--upstream", "file:///tmp", "--listen", "nonsense"], "listen", id="listen"),
        pytest.param(
            ["--upstream", "file:///tmp", "--listen", "0.0.0.0:9292"], "listen", id="open-network"
        ),
        pytest.param(
            ["--upstream", "file:///tmp", "--listen", "0.0.0.0:0", "--token-file", "/missing"],
            "token_file",
            id="open-network-missing-token-file",
        ),
        pytest.param(
            ["--upstream", "file:///tmp", "--listen", "127.0.0.1:0", "--token-file", "/tmp"],
            "token_file",
            id="token-file-is-a-directory",
        ),
        pytest.param(
            ["--upstream", "http://127.0.0.1:1/", "--upstream-token-file", "/missing"],
            "upstream_token_file",
            id="missing-upstream-token-file",
        ),
        pytest.param(
            ["--upstream", "file:///missing-upstream-dir", "--listen", "127.0.0.1:0"],
            "upstream",
            id="missing-file-upstream",
        ),
    ],
)
def test_bad_settings_exit_with_one_line(tmp_path: Path, args: list[str], setting: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagecache.agent", "--cache-dir", str(tmp_path / "c"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert setting in lines[0]


def test_help_documents_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagecache.agent", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for flag in (
        "--listen",
        "--cache-dir",
        "--upstream",
        "--upstream-token-file",
        "--token-file",
        "--insecure-no-auth",
        "--workers",
        "--max-size",
        "--stall-timeout",
        "--retries",
        "--retry-backoff",
        "--cache-on-read",
        "--no-cache-on-read",
        "--log-format",
        "--log-level",
        "--drain-timeout",
    ):
        assert flag in result.stdout, flag


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "imagecache.agent",
                "--upstream",
                "file:///tmp",
                "--cache-dir",
                str(tmp_path / "c"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("imagecache-agent: cannot start:"), result.stderr
    assert "Traceback" not in result.stderr


def test_json_logs(tmp_path: Path, upstream: HttpFileServer) -> None:
    upstream.add(IMAGE_A, payload(10_000))
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=upstream.upstream,
        extra_args=["--log-format", "json"],
    )
    agent.start()
    try:
        assert call(agent, "PUT", f"/v2/cache/{IMAGE_A}")[0] == 202
        wait_until(lambda: report(agent, IMAGE_A)["state"] == "cached", what="cached")
        assert call(agent, "DELETE", f"/v2/cache/{IMAGE_A}")[0] == 204
    finally:
        assert agent.stop() == 0
    events = [json.loads(line) for line in agent.logs().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "message"} <= set(events[0])
    about_a = [e["event"] for e in events if e.get("image_id") == IMAGE_A]
    assert about_a == ["queued", "started", "cached", "removed"], about_a
