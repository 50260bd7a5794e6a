"""Helpers for the agent's own OpenStack tests: a real agent on a real cloud, and clients of it.

- `running_agent`: an `imagecache-agent` process whose credentials are a cloud of the fixture's
  clouds.yaml (``OS_CLIENT_CONFIG_FILE`` + ``IMAGECACHE_OS_CLOUD``), Keystone-mode inbound auth
  and an operator token file by default, upstream ``glance://`` (the catalog's endpoint).
- `client_clouds`: a copy of the fixture's clouds.yaml with one more cloud per target, the
  ``admin`` (or another) entry plus ``image_endpoint_override`` (bare URL: no ``/v2``).
- `Cli`: the stock ``openstack`` CLI on such a clouds.yaml; every call and its answer is kept in
  `Transcript` (printed with ``pytest -s``: the record of what each command answered).
- `sdk`: an openstacksdk `Connection` on such a cloud.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from openstack import connection
from openstack.config import loader

from tests.openstack.cloud import OpenStackCloud
from tests.openstack.processes import run_command
from tests.support.agents import AgentProcess

OPERATOR_TOKEN = "operator-token-from-the-agent-token-file"


@contextmanager
def running_agent(
    cloud: OpenStackCloud,
    workdir: Path,
    *,
    os_cloud: str = "appcred",
    auth: str = "keystone",
    upstream: str = "glance://",
    extra_args: tuple[str, ...] = (),
) -> Iterator[AgentProcess]:
    """Start an agent with `os_cloud`'s credentials; stop it on exit."""
    token_file = workdir / "tokens"
    token_file.write_text(f"{OPERATOR_TOKEN}\n")
    agent = AgentProcess(
        cache_dir=workdir / "cache",
        upstream=upstream,
        token_file=token_file,
        extra_args=["--auth", auth, "--retry-backoff", "0.05", *extra_args],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
        patch.setenv("IMAGECACHE_OS_CLOUD", os_cloud)
        agent.start(timeout=30)
    try:
        yield agent
    finally:
        if agent.process is not None and agent.process.poll() is None:
            agent.stop()


def client_clouds(cloud: OpenStackCloud, path: Path, targets: dict[str, str]) -> Path:
    """The fixture's clouds plus one per `targets` item: name → image endpoint (admin creds)."""
    doc = yaml.safe_load(cloud.clouds_yaml.read_text())
    for name, endpoint in targets.items():
        entry = json.loads(json.dumps(doc["clouds"]["admin"]))
        entry["image_endpoint_override"] = endpoint
        doc["clouds"][name] = entry
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sdk(clouds_yaml: Path, name: str) -> connection.Connection:
    """An openstacksdk connection on cloud `name` of `clouds_yaml` (nothing from the env)."""
    config = loader.OpenStackConfig(config_files=[str(clouds_yaml)], load_envvars=False)
    return connection.Connection(config=config.get_one(cloud=name))


@dataclass
class Transcript:
    """Each client call and what it answered, for the report; printed as it goes."""

    lines: list[str] = field(default_factory=list)

    def record(self, call: str, answer: object) -> None:
        text = answer if isinstance(answer, str) else repr(answer)
        line = f"{call}\n    -> {text.strip()[:600]}"
        self.lines.append(line)
        print(line)


@dataclass
class Cli:
    """The stock ``openstack`` CLI of the cloud's venv, on `clouds_yaml`'s cloud `name`."""

    cloud: OpenStackCloud
    clouds_yaml: Path
    name: str
    transcript: Transcript

    def __call__(self, *args: str) -> str:
        env = {**self.cloud.base_env, "OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)}
        command = [str(self.cloud.venv.bin("openstack")), "--os-cloud", self.name, *args]
        out = run_command(command, env=env, timeout=90)
        self.transcript.record(f"$ openstack --os-cloud {self.name} {' '.join(args)}", out)
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-f", "json"))


def http(
    method: str, url: str, *, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request: status, headers, body (errors included)."""
    sent = dict(headers or {})
    if token is not None:
        sent["X-Auth-Token"] = token
    request = urllib.request.Request(url, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_cached(agent: AgentProcess, image_id: str, *, within: float = 60.0) -> dict[str, Any]:
    """Poll the agent's report (operator token) until the image is cached; bounded."""
    deadline = time.monotonic() + within
    while True:
        status, _, body = http("GET", f"{agent.url}/v2/cache/{image_id}", token=OPERATOR_TOKEN)
        assert status == 200, body
        report: dict[str, Any] = json.loads(body)
        if report["state"] == "cached":
            return report
        assert report["state"] != "failed", report
        if time.monotonic() > deadline:
            raise AssertionError(f"{image_id} not cached within {within}s: {report}")
        time.sleep(0.1)
