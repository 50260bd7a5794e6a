"""Client connections against a real agent process: floods, slow clients, the fd limit.

Covers (issue 11 "Connections"):
- at a low fd limit (``RLIMIT_NOFILE`` 128, set in the child) a flood of idle and half-sent
  connections neither fills the log (bounded bytes, no traceback) nor stops ``/healthz``;
- a client sending its request head byte by byte (slowloris) is disconnected after
  ``--header-timeout``;
- at ``--max-connections`` with every connection busy, a new request is answered a Glance-shaped
  503 while ``/healthz`` still answers 200 (the probe reserve);
- `RateLimitedLog`: one warning per interval, carrying the count of what it stands for.
"""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.faults_client import request, wait_until
from tests.support.agents import AgentProcess

FLOOD = 400
LOG_BUDGET = 16 * 1024


def connect(agent: AgentProcess, first_bytes: bytes = b"") -> socket.socket | None:
    """A client socket to the agent (None if the connection itself is refused or times out)."""
    sock = socket.socket()
    sock.settimeout(0.5)  # a full listen queue drops the handshake: count it as refused
    try:
        sock.connect((agent.host, agent.port))
        if first_bytes:
            sock.sendall(first_bytes)
    except OSError:
        sock.close()
        return None
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the agent has closed `sock` (EOF or reset); False while it is open."""
    sock.settimeout(0.05)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
def agent_with_fd_limit(tmp_path: Path) -> Iterator[AgentProcess]:
    """An agent whose soft and hard fd limit is 128 (set in the child before exec)."""
    agent = AgentProcess(cache_dir=tmp_path / "cache", upstream=f"file://{tmp_path}")

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    assert agent.log_path is not None
    with agent.log_path.open("wb") as log:
        process = subprocess.Popen(
            agent.command(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=low_fd_limit
        )
    agent.process = process
    try:
        wait_until(
            lambda: (_healthz(agent) == 200 or process.poll() is not None) or None,
            timeout=20,
            what="agent started",
        )
        assert process.poll() is None, agent.logs()
        yield agent
    finally:
        agent.kill()


def _healthz(agent: AgentProcess) -> int | None:
    try:
        return request(agent.host, agent.port, "GET", "/healthz", timeout=2).status
    except OSError:
        return None


def test_flood_at_the_fd_limit_keeps_healthz_and_a_small_log(
    agent_with_fd_limit: AgentProcess, sockets: list[socket.socket]
) -> None:
    agent = agent_with_fd_limit
    for number in range(FLOOD):
        half_head = b"GET /v2/cache HTTP/1.1\r\nHost: x\r\n" if number % 2 else b""
        sock = connect(agent, half_head)
        if sock is not None:
            sockets.append(sock)
    started = time.monotonic()
    reply = request(agent.host, agent.port, "GET", "/healthz", timeout=5)
    assert reply.status == 200
    assert time.monotonic() - started < 5
    assert agent.stop(timeout=30) == 0
    logs = agent.logs()
    assert "Traceback" not in logs, logs[:3000]
    assert len(logs.encode()) < LOG_BUDGET, f"{len(logs)} bytes of log:\n{logs[:3000]}"


def test_slow_request_head_is_cut_off(tmp_path: Path) -> None:
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=f"file://{tmp_path}",
        extra_args=["--header-timeout", "1"],
    )
    agent.start()
    try:
        sock = connect(agent)
        assert sock is not None
        with sock:
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            deadline = time.monotonic() + 20
            sent = 0
            while not closed_by_peer(sock):  # each check waits 50 ms: about 20 bytes a second
                assert time.monotonic() < deadline, "a slow head was never cut off"
                try:
                    sock.send(head[sent % len(head) : sent % len(head) + 1])
                except OSError:
                    break  # reset by the agent
                sent += 1
            assert sent < len(head), "the head was sent in full: nothing was cut off"
        assert _healthz(agent) == 200
    finally:
        agent.kill()


def test_at_the_limit_requests_get_503_and_probes_still_answer(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    agent = AgentProcess(
        cache_dir=tmp_path / "cache",
        upstream=f"file://{tmp_path}",
        extra_args=["--max-connections", "2"],
    )
    agent.start()
    try:
        for _ in range(2):  # two keep-alive connections that finished a request: busy, kept
            sock = connect(agent, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock is not None
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sockets.append(sock)
        refused = request(agent.host, agent.port, "GET", "/v2/cache")
        assert refused.status == 503
        assert refused.json()["code"] == "503 Service Unavailable"
        assert request(agent.host, agent.port, "GET", "/healthz").status == 200
        assert request(agent.host, agent.port, "GET", "/readyz").status == 200
        assert not any(closed_by_peer(sock) for sock in sockets), "busy connections were cut"
    finally:
        agent.kill()


def test_rate_limited_log_counts_what_it_does_not_print(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from imagecache.agent.http.connections import (
        RateLimitedLog,  # here: the process tests run alone
    )

    now = [100.0]
    warnings = RateLimitedLog(
        logging.getLogger("test.ratelimit"), interval=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(1000):
            warnings.note("refused", "refused a connection")
        now[0] += 10
        warnings.note("refused", "refused a connection")
        warnings.note("timeout", "timed out")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "refused a connection (1 since the last such warning)",
        "refused a connection (1000 since the last such warning)",
        "timed out (1 since the last such warning)",
    ]
