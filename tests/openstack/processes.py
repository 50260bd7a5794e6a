"""Run one WSGI service under uWSGI on a loopback port, wait until it answers, stop it.

Each service runs in its own process group (uWSGI forks workers), so stopping it ends the
master and every worker; the master also gets SIGTERM if the test process dies without
stopping it. Every wait has a deadline, and a failure carries the service's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.openstack.venv import OpenStackVenv

READY_TIMEOUT = 180.0  # seconds; loading Keystone or Glance takes 10-30 s on 2 busy cores


class ServiceFailed(RuntimeError):
    """A service or one of its setup commands failed; the message holds its output."""


def terminate_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def log_tail(path: Path, size: int = 6000) -> str:
    """The end of a log file, for failure messages."""
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace")
    return text[-size:]


def run_command(args: list[str], *, env: dict[str, str], timeout: float = 300.0) -> str:
    """Run one setup command (`keystone-manage db_sync`, ...); its stdout, or ServiceFailed."""
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ServiceFailed(f"{args[:3]} did not finish within {timeout}s") from error
    if done.returncode != 0:
        raise ServiceFailed(
            f"{' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return done.stdout


def http_answers(url: str) -> bool:
    """True when `url` gives any HTTP answer with a status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class UwsgiService:
    """One `uwsgi` master serving a WSGI module on 127.0.0.1:`port`."""

    name: str
    uwsgi: Path
    venv: Path
    module: str
    port: int
    log_path: Path
    env: dict[str, str]
    processes: int = 2
    threads: int = 2
    lazy_apps: bool = True  # load the app in each worker (needed when it starts threads)
    extra_options: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.uwsgi),
            "--http-socket", f"127.0.0.1:{self.port}",
            "--home", str(self.venv),
            "--module", self.module,
            "--master",
            "--processes", str(self.processes),
            "--threads", str(self.threads),
            "--enable-threads",
            *(["--lazy-apps"] if self.lazy_apps else []),
            "--need-app",
            "--die-on-term",
            "--no-orphans",  # workers die with the master
            "--buffer-size", "65535",
            "--http-auto-chunked",
            "--http-raw-body",
            "--chunked-input-limit", "10485760",
            "--socket-timeout", "60",
            "--disable-logging",
            # Without keep-alive support, say so: clients must not reuse the connection.
            "--add-header", "Connection: close",
            *self.extra_options,
        ]  # fmt: skip

    def start(self, *, probe_path: str, timeout: float = READY_TIMEOUT) -> None:
        """Spawn uWSGI and wait (bounded) until `probe_path` answers."""
        self.spawn()
        self.wait_ready(probe_path=probe_path, timeout=timeout)

    def spawn(self) -> None:
        """Spawn uWSGI without waiting; `wait_ready` waits until it answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )

    def wait_ready(self, *, probe_path: str, timeout: float = READY_TIMEOUT) -> None:
        """Wait (bounded) until `probe_path` answers; stop the service and raise if not."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceFailed(
                    f"{self.name} exited with {self.process.returncode}:\n{log_tail(self.log_path)}"
                )
            if http_answers(self.url + probe_path):
                return
            time.sleep(0.2)
        self.stop()
        raise ServiceFailed(
            f"{self.name} did not answer {probe_path} within {timeout}s:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the master, then SIGKILL its whole process group if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=timeout)


def openstack_api(
    venv: OpenStackVenv, name: str, *, port: int, workdir: Path, env: dict[str, str]
) -> UwsgiService:
    """The OpenStack service `name`'s API (``<name>.wsgi.api``) from `venv`, configured from
    `workdir` (``OS_<NAME>_CONFIG_DIR``) and logging to ``<name>.log`` there: one process of
    four threads (not started: `start` or `spawn` it)."""
    return UwsgiService(
        name=name,
        uwsgi=venv.bin("uwsgi"),
        venv=venv.path,
        module=f"{name}.wsgi.api:application",
        port=port,
        processes=1,
        threads=4,
        log_path=workdir / f"{name}.log",
        env={**env, f"OS_{name.upper()}_CONFIG_DIR": str(workdir)},
    )
