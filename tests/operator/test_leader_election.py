"""Two real operator processes with leader election, against the emulator and real agents.

Covers: exactly one process leads (the Lease names it, ``/readyz`` tells leader and standby,
``imagecache_operator_leader`` is 1 on it and 0 on the standby) and only it writes to the API (the
emulator's write log, by each process's own token), while every request ends Cached; the leader
killed with SIGKILL mid-flight: the standby takes the Lease over (one transition) and a request
created after the kill reaches Cached within 30 s, the in-flight one too, with no status going
backwards and no event posted twice; a leader whose renewals fail exits non-zero and has written
its last before the standby writes its first.

Each process gets its own kubeconfig (token ``operator-a`` / ``operator-b``) and ``POD_NAME``,
and second-scale lease timings (the settings' ``lease_*`` fields).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoordinationV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.kube.emulator import Emulator
from tests.kube.faults import WriteRecord
from tests.operator.harness import FAST, AgentPool, image_bytes, image_id
from tests.support.agents import AgentProcess, free_port
from tests.support.upstreams import Faults, HttpFileServer

GROUP, VERSION, PLURAL, NS = "imagecache.dev", "v1alpha1", "imagecacherequests", "default"
LEASE = "imagecache-operator"
LEASE_TIMINGS = {"lease_duration": 4.0, "lease_renew_deadline": 3.0, "lease_retry_period": 0.5}
FAILOVER_BUDGET = 30.0
PHASE_ORDER = ["", "Pending", "Queued", "Caching", "Cached"]


class OperatorProcess:
    """``python -m imagecache.controller`` with election on, under an identity of its own."""

    def __init__(self, kube: Emulator, name: str, token_file: Path, log: Path) -> None:
        self.name = name
        self.port = free_port()
        settings = {**FAST, **LEASE_TIMINGS, "metrics_port": self.port, "leader_election": True}
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig_for(name)),
            "POD_NAME": name,
            "IMAGECACHE_OPERATOR_LEASE_NAMESPACE": NS,
            "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": str(token_file),
            **{f"IMAGECACHE_OPERATOR_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, **settings: float) -> None:
        """Override settings (before `start`)."""
        self.env.update({f"IMAGECACHE_OPERATOR_{k.upper()}": str(v) for k, v in settings.items()})

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "imagecache.controller"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log.parent,
            )

    def role(self) -> str | None:
        """What ``/readyz`` says (``leader`` / ``standby``), None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return str(json.loads(response.read())["role"])
        except (OSError, ValueError, KeyError):
            return None

    def leader_gauge(self) -> float | None:
        """``imagecache_operator_leader`` from ``/metrics`` (None if absent)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("imagecache_operator_leader "):
                return float(line.split()[1])
        return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def pair(kube: Emulator, token_file: Path, tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:
    procs = {
        name: OperatorProcess(kube, name, token_file, tmp_path / f"{name}.log")
        for name in ("operator-a", "operator-b")
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()


async def wait_until(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)


def lease_holder(api: ApiClient) -> tuple[str, int] | None:
    try:
        spec = CoordinationV1Api(api).read_namespaced_lease(LEASE, NS).spec
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return spec.holder_identity or "", int(spec.lease_transitions or 0)


def create_pod(api: ApiClient, name: str, agent: AgentProcess) -> None:
    """A Running, Ready pod at the agent's address (status written as the kubelet does)."""
    core = CoreV1Api(api)
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": name, "annotations": {"imagecache.dev/port": str(agent.port)}},
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "main", "image": "registry.invalid/agent:test"}],
            },
        },
    )
    core.patch_namespaced_pod_status(
        name,
        NS,
        {
            "status": {
                "phase": "Running",
                "podIP": agent.host,
                "podIPs": [{"ip": agent.host}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )


def create_request(api: ApiClient, name: str, image: str, pod: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageCacheRequest",
        "metadata": {"name": name},
        "spec": {"image": image, "pod": pod},
    }
    CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def status_of(api: ApiClient, name: str) -> dict[str, Any]:
    obj = CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    return dict(obj.get("status") or {})


def event_reasons(api: ApiClient, name: str) -> list[str]:
    events = CoreV1Api(api).list_namespaced_event(NS, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in events.items]


async def wait_phase(
    api: ApiClient, name: str, wanted: str, *, within: float, seen: list[str]
) -> None:
    def check() -> bool:
        phase = str(status_of(api, name).get("phase") or "")
        if not seen or seen[-1] != phase:
            seen.append(phase)
        return phase == wanted

    await wait_until(check, f"{name} {wanted} (seen {seen})", within=within)


async def elect(pair: dict[str, OperatorProcess], api: ApiClient) -> tuple[str, str]:
    """Start both, wait for a holder and for both to answer; (leader, standby) names."""
    for proc in pair.values():
        proc.start()
    holder = await wait_until(lambda: (lease_holder(api) or ("",))[0], "a lease holder")
    leader = next(name for name in pair if holder.startswith(f"{name}-"))
    standby = next(name for name in pair if name != leader)
    await wait_until(lambda: pair[leader].role() == "leader", "the leader's /readyz")
    await wait_until(lambda: pair[standby].role() == "standby", "the standby's /readyz")
    return leader, standby


def accepted(kube: Emulator, token: str, since: float = 0.0) -> list[WriteRecord]:
    """The writes of one client the server accepted (both candidates may try to create the
    Lease at once: the refused one, 409 AlreadyExists, wrote nothing)."""
    return [w for w in kube.writes if w.token == token and w.code < 300 and w.at >= since]


def writers(kube: Emulator, since: float = 0.0) -> collections.Counter[str]:
    return collections.Counter(w.token for w in kube.writes if w.code < 300 and w.at >= since)


async def test_two_processes_exactly_one_writes(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    pair: dict[str, OperatorProcess],
) -> None:
    agent = agents.start(2)
    with kube.official_client("tester") as api:
        create_pod(api, "glance-0", agent)
        leader, standby = await elect(pair, api)
        for n in range(3):
            upstream.add(image_id(300 + n), image_bytes(f"le-{n}", 128 * 1024))
            create_request(api, f"req-{n}", image_id(300 + n), "glance-0")
        for n in range(3):
            await wait_phase(api, f"req-{n}", "Cached", within=30, seen=[])

        def renewals() -> int:
            return sum(1 for w in accepted(kube, leader) if w.resource == "leases")

        before = renewals()
        await wait_until(lambda: renewals() >= before + 2, "two more renewals, standby waiting")
        assert pair[standby].alive(), pair[standby].logs()
        assert pair[standby].role() == "standby"
        assert (pair[leader].leader_gauge(), pair[standby].leader_gauge()) == (1.0, 0.0)
        written = writers(kube)
        assert written[standby] == 0, accepted(kube, standby)
        assert written[leader] > 0
        assert set(written) == {leader, "tester"}
        holder = lease_holder(api)
        assert holder is not None and holder[0].startswith(f"{leader}-") and holder[1] == 0


async def test_sigkill_the_leader_the_standby_takes_over(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    pair: dict[str, OperatorProcess],
) -> None:
    agent = agents.start(2)
    old, new = image_id(310), image_id(311)
    upstream.add(old, image_bytes("in-flight", 256 * 1024))
    upstream.faults[old] = Faults(stall_after=64 * 1024, stall_seconds=60)
    upstream.add(new, image_bytes("after-kill", 128 * 1024))
    with kube.official_client("tester") as api:
        create_pod(api, "glance-0", agent)
        leader, standby = await elect(pair, api)
        create_request(api, "in-flight", old, "glance-0")
        seen_old: list[str] = []
        await wait_phase(api, "in-flight", "Caching", within=30, seen=seen_old)

        pair[leader].kill()
        killed_at = time.monotonic()
        create_request(api, "after-kill", new, "glance-0")
        seen_new: list[str] = []
        await wait_phase(api, "after-kill", "Cached", within=FAILOVER_BUDGET, seen=seen_new)
        failover = time.monotonic() - killed_at
        upstream.release_stalls()
        await wait_phase(api, "in-flight", "Cached", within=30, seen=seen_old)

        holder = lease_holder(api)
        assert holder is not None and holder[0].startswith(f"{standby}-") and holder[1] == 1
        assert pair[standby].role() == "leader"
        assert writers(kube, since=killed_at)[leader] == 0
        assert writers(kube)[standby] > 0
        assert accepted(kube, standby) == accepted(kube, standby, since=killed_at)
        for seen in (seen_old, seen_new):
            ranks = [PHASE_ORDER.index(p) for p in seen if p in PHASE_ORDER]
            assert ranks == sorted(ranks), seen
        for name in ("in-flight", "after-kill"):
            reasons = event_reasons(api, name)
            twice = [r for r, n in collections.Counter(reasons).items() if n > 1]
            assert twice == [], (name, reasons)
            assert "Cached" in reasons, (name, reasons)
        print(f"failover: a new request Cached {failover:.1f}s after SIGKILL of the leader")


async def test_a_leader_that_cannot_renew_stops_before_the_standby_takes_over(
    kube: Emulator,
    upstream: HttpFileServer,
    agents: AgentPool,
    pair: dict[str, OperatorProcess],
) -> None:
    # Two seconds between giving up (renew deadline + one retry) and the earliest takeover.
    for proc in pair.values():
        proc.configure(lease_duration=6.0, lease_renew_deadline=3.0, lease_retry_period=0.5)
    agent = agents.start(2)
    image = image_id(320)
    upstream.add(image, image_bytes("renew-fails", 128 * 1024))
    with kube.official_client("tester") as api:
        create_pod(api, "glance-0", agent)
        leader, standby = await elect(pair, api)
        kube.fail_writes(503, resource="leases", token=leader)  # the leader's renewals fail
        process = pair[leader].process
        assert process is not None
        await wait_until(lambda: process.poll() is not None, "the leader gives up and exits")
        assert process.returncode != 0, pair[leader].logs()
        await wait_until(lambda: pair[standby].role() == "leader", "the standby takes over")
        create_request(api, "after", image, "glance-0")
        await wait_phase(api, "after", "Cached", within=FAILOVER_BUDGET, seen=[])
        last_by_old = max(w.at for w in accepted(kube, leader))
        first_by_new = min(w.at for w in accepted(kube, standby))
        assert last_by_old < first_by_new
        holder = lease_holder(api)
        assert holder is not None and holder[0].startswith(f"{standby}-") and holder[1] == 1
