"""End to end with the real ``imagecache-operator`` process, kubectl, and the API's validation.

Covers: the operator killed with ``kill -9`` mid-flight and restarted (state rebuilt from status
and agents: everything ends Cached); ``/healthz`` and ``/metrics`` of the process; invalid
objects refused by the API server (exactly one of pod/podSelector, bad image id, bad port,
immutable image); ``kubectl apply -f examples/...`` then ``kubectl wait --for=jsonpath=...``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.client import ApiError
from tests.kube.emulator import Emulator
from tests.operator.harness import (
    FAST,
    ICR,
    AgentPool,
    RunningOperator,
    agent_has,
    create_agent_pod,
    image_bytes,
    image_id,
    phase,
    request_body,
    wait_for_status,
    wait_until,
)
from tests.support.agents import free_port
from tests.support.upstreams import Faults, HttpFileServer

REPO = Path(__file__).resolve().parents[2]


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def _operator_command() -> list[str]:
    script = Path(sys.executable).with_name("imagecache-operator")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagecache.controller"]


class OperatorProcess:
    """A real operator process pointed at the emulator through KUBECONFIG."""

    def __init__(self, kube: Emulator, token_file: Path, log: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **kube.env,
            **{f"IMAGECACHE_OPERATOR_{k.upper()}": str(v) for k, v in FAST.items()},
            "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": str(token_file),
            "IMAGECACHE_OPERATOR_METRICS_PORT": str(self.port),
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                _operator_command(),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log.parent,
            )

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)


@pytest.fixture
def operator_process(kube: Emulator, token_file: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kube, token_file, tmp_path / "operator.log")
    try:
        yield proc
    finally:
        proc.kill()


async def test_operator_killed_mid_flight_then_restarted(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    operator_process: OperatorProcess,
) -> None:
    pool = [agents.start(n) for n in (2, 3)]
    images = [image_id(90 + n) for n in range(4)]
    for n, image in enumerate(images):
        upstream.add(image, image_bytes(f"restart-{n}", 256 * 1024))
        upstream.faults[image] = Faults(stall_after=64 * 1024, stall_seconds=30)
    for n, agent in enumerate(pool):
        await create_agent_pod(kube, f"glance-{n}", agent)
    operator_process.start()
    await wait_until(operator_process.healthy, within=30, what="operator /healthz")
    for n, image in enumerate(images[:3]):
        await kube.client.create(ICR, request_body(f"req-{n}", image, pod=f"glance-{n % 2}"))
    for n in range(3):
        await wait_for_status(kube, f"req-{n}", lambda s: s.get("phase") in ("Queued", "Caching"))
    metrics = await asyncio.to_thread(_read, f"http://127.0.0.1:{operator_process.port}/metrics")
    assert b"imagecache_operator_agent_requests_total" in metrics

    operator_process.kill()
    await kube.client.create(ICR, request_body("req-3", images[3], pod="glance-1"))
    upstream.release_stalls()
    operator_process.start()
    for n in range(4):
        await wait_for_status(kube, f"req-{n}", phase("Cached"), within=40)
    for n, image in enumerate(images):
        assert await asyncio.to_thread(agent_has, pool[n % 2], image)
    assert operator_process.terminate() == 0


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        pytest.param({"image": "abc", "pod": "p", "podSelector": {}}, "exactly one", id="both"),
        pytest.param({"image": "abc"}, "exactly one", id="neither"),
        pytest.param({"image": "../etc", "pod": "p"}, "spec.image", id="bad-image"),
        pytest.param({"image": "abc", "pod": "p", "port": 0}, "spec.port", id="port-zero"),
        pytest.param({"image": "abc", "pod": "p", "port": 70000}, "spec.port", id="port-high"),
        pytest.param({"pod": "p"}, "spec.image", id="no-image"),
    ],
)
async def test_invalid_objects_are_refused(
    kube: Emulator, spec: dict[str, object], fragment: str
) -> None:
    body = request_body("bad", "x", pod=None)
    body["spec"] = spec
    with pytest.raises(ApiError) as info:
        await kube.client.create(ICR, body)
    assert info.value.status == 422
    assert fragment in info.value.message
    assert "is invalid" in info.value.message


async def test_immutable_fields_are_refused(kube: Emulator) -> None:
    await kube.client.create(ICR, request_body("req", "abc", pod="p"))
    for change, field in (({"image": "other"}, "spec.image"), ({"pod": "q"}, "spec.pod")):
        with pytest.raises(ApiError) as info:
            await kube.client.patch(ICR, "req", {"spec": change}, namespace="default")
        assert info.value.status == 422 and f"{field} is immutable" in info.value.message


def _kubectl() -> str | None:
    local = REPO / ".tools" / "bin" / "kubectl"
    return str(local) if local.exists() else shutil.which("kubectl")


@pytest.mark.skipif(_kubectl() is None, reason="kubectl not found (.tools/bin or PATH)")
async def test_kubectl_apply_and_wait_on_the_examples(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    kubectl = _kubectl()
    assert kubectl is not None
    await kube.client.create_namespace("openstack")
    images_dir = REPO / "examples" / "images"
    for image in ("2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5e", "7d0b6f5c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"):
        upstream.add(image, (images_dir / image).read_bytes())
    for n in range(2):
        agent = agents.start(2 + n)
        await create_agent_pod(
            kube, f"glance-api-{n}", agent, namespace="openstack", labels={"app": "glance-api"}
        )
    env = {**os.environ, **kube.env}

    def run(*args: str) -> str:
        done = subprocess.run(
            [kubectl, *args], env=env, capture_output=True, text=True, timeout=90, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for example in (
        "request-single-pod.yaml",
        "request-selector.yaml",
        "request-evict-on-delete.yaml",
    ):
        await asyncio.to_thread(run, "apply", "-f", str(REPO / "examples" / example))
    for name in ("ubuntu-on-glance-api-0", "cirros-on-all-glance-api", "cirros-while-needed"):
        await asyncio.to_thread(
            run,
            "wait",
            "-n",
            "openstack",
            "--for=jsonpath={.status.phase}=Cached",
            f"imagecacherequests/{name}",
            "--timeout=60s",
        )
    table = await asyncio.to_thread(run, "get", "icr", "-n", "openstack")
    assert "Cached" in table
    await asyncio.to_thread(
        run, "delete", "-n", "openstack", "icr", "cirros-while-needed", "--timeout=60s"
    )
