"""A real Prometheus server (Debian's `prometheus` package) for tests and the docs' picture.

`find_binary` locates ``prometheus`` / ``promtool`` on PATH (and /usr/bin, where Debian puts
them). `PrometheusServer` writes a static scrape configuration and the given rule groups into a
temporary directory, starts Prometheus on 127.0.0.1 and a free port with its TSDB there, waits
(bounded) for ``/-/ready``, answers instant and range queries through the HTTP API, and is killed
on `stop` (its directory removed with it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.agents import free_port

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin"])


def find_binary(name: str) -> str | None:
    """``prometheus`` or ``promtool`` from PATH or Debian's /usr/bin, else None."""
    return shutil.which(name, path=SEARCH_PATH)


@dataclass(frozen=True)
class Target:
    """One static scrape target: ``host:port`` with the labels a Kubernetes SD would give it."""

    address: str
    labels: Mapping[str, str]


@dataclass
class PrometheusServer:
    """One Prometheus process; `start` it, query it, `stop` it."""

    binary: str
    jobs: Mapping[str, Sequence[Target]]
    rule_groups: Sequence[Mapping[str, Any]] = ()
    interval: str = "1s"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prometheus-")))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml: every job scraped every `interval`, rules evaluated as often."""
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [t.address], "labels": dict(t.labels)} for t in targets
                    ],
                }
                for job, targets in self.jobs.items()
            ],
        }
        if self.rule_groups:
            rules = self.workdir / "rules.yaml"
            rules.write_text(yaml.safe_dump({"groups": list(self.rule_groups)}))
            config["rule_files"] = [str(rules)]
        return config

    def start(self, within: float = 30.0) -> None:
        """Write the config, start Prometheus, wait until it is ready (bounded)."""
        self.port = self.port or free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        try:
            wait_for(self._ready, within=within, what="prometheus /-/ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """Kill the process and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` of a success, else an AssertionError with the error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the vector's samples (metric labels, [time, value])."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[Any]:
        """A range query: one matrix series per label set."""
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return list(data["result"])

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus has stored."""
        return set(self.api("label/__name__/values"))


def wait_for(check: Callable[[], Any], *, within: float, what: str, every: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {within}s: {what}")
        time.sleep(every)
