"""Run real `imagecache-agent` processes on loopback addresses for tests and benchmarks.

Each agent is a separate OS process (so tests can `kill -9` it), listening on its own loopback
address (127.0.0.2, 127.0.0.3, ... all route to `lo` on Linux), and reached over real HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class AgentProcess:
    """One agent process: start it, wait until it answers, stop or kill it, restart it."""

    cache_dir: Path
    upstream: str
    host: str = "127.0.0.1"
    port: int = 0
    token_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        if self.log_path is None:
            self.log_path = self.cache_dir.parent / f"agent-{self.host}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "imagecache.agent",
            "--listen",
            f"{self.host}:{self.port}",
            "--cache-dir",
            str(self.cache_dir),
            "--upstream",
            self.upstream,
        ]
        if self.token_file is not None:
            args += ["--token-file", str(self.token_file)]
        return args + self.extra_args

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the agent and wait (bounded) until `/healthz` answers 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"agent did not answer /healthz within {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        """`kill -9`: no chance to clean up, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return int(self.process.returncode)

    def logs(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
