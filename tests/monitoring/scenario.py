"""A monitored fleet: real agents and the real operator, scraped by a real Prometheus.

The operator tests' set-up (tests/operator/harness.py: the Kubernetes API emulator, the operator
in its own thread, `imagecache-agent` processes on 127.0.0.2, .3, ... as the pods, an HTTP
upstream) plus a Prometheus (tests/support/prometheus.py) with a static scrape configuration
that labels each target as the chart's ServiceMonitor/PodMonitor would (``namespace``, ``pod``),
and the chart's rendered alert rules loaded. Used by tests/monitoring/test_live.py and by
docs/monitoring_picture.py (the picture of the dashboard in docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    TOKEN,
    AgentPool,
    RunningOperator,
    create_agent_pod,
    request_body,
    start_operator,
)
from tests.support.agents import AgentProcess, free_port
from tests.support.prometheus import PrometheusServer, Target, wait_for
from tests.support.upstreams import HttpFileServer

NAMESPACE = "imagecache-system"
"""The namespace label of every target: the release namespace the rules were rendered for."""
OPERATOR_POD = "ic-imagecache-operator-0"
STEADY = {"recheck_interval": 60.0}
"""Operator settings over the harness' fast ones: a Failed request stays Failed (the harness
re-checks every second, which would re-queue it and make it flicker between phases)."""


@dataclass
class Fleet:
    """Everything running; `request` creates an ImageCacheRequest for one pod."""

    kube: Emulator
    upstream: HttpFileServer
    agents: list[AgentProcess]
    pods: list[str]
    operator: RunningOperator
    operator_url: str
    prometheus: PrometheusServer

    async def request(self, name: str, image: str, pod: str) -> None:
        await self.kube.client.create(ICR, request_body(name, image, pod=pod))


@contextlib.asynccontextmanager
async def monitored_fleet(
    *,
    kube: Emulator,
    workdir: Path,
    prometheus_binary: str,
    rule_groups: Sequence[dict[str, Any]],
    agents: int = 2,
    interval: str = "1s",
    agent_args: Sequence[str] = (),
    operator_settings: Mapping[str, Any] = STEADY,
) -> AsyncIterator[Fleet]:
    """Start upstream, agents (pods ``glance-0``...), the operator and Prometheus, wait until
    Prometheus scrapes them all, create the pods; stop everything on the way out."""
    token_file = workdir / "agent-token"
    token_file.write_text(TOKEN + "\n")
    upstream = HttpFileServer()
    with upstream.running_in_thread():
        pool = AgentPool(root=workdir / "agents", upstream=upstream.upstream, token_file=token_file)
        prometheus: PrometheusServer | None = None
        operator: RunningOperator | None = None
        try:
            hosts = [f"127.0.0.{2 + n}" for n in range(agents)]
            ports = [free_port(host) for host in hosts]
            pods = [f"glance-{n}" for n in range(agents)]
            operator_port = free_port()
            jobs = {
                "imagecache-operator": [
                    Target(
                        f"127.0.0.1:{operator_port}",
                        {"namespace": NAMESPACE, "pod": OPERATOR_POD},
                    )
                ],
                "imagecache-agent": [
                    Target(f"{host}:{port}", {"namespace": NAMESPACE, "pod": pod})
                    for host, port, pod in zip(hosts, ports, pods, strict=True)
                ],
            }
            prometheus = server = PrometheusServer(
                binary=prometheus_binary,
                jobs=jobs,
                rule_groups=list(rule_groups),
                interval=interval,
                workdir=workdir / "prometheus",
            )
            server.workdir.mkdir(parents=True, exist_ok=True)
            # Prometheus starts beside the agents and the operator (its start-up is the
            # longest); their ports are fixed before so its configuration names them.
            starting = asyncio.create_task(asyncio.to_thread(server.start))
            try:
                started = [
                    await asyncio.to_thread(
                        pool.start, 2 + n, port=ports[n], extra_args=list(agent_args)
                    )
                    for n in range(agents)
                ]
                operator = await start_operator(
                    kube, token_file=token_file, metrics_port=operator_port, **operator_settings
                )
            finally:
                await starting
            # Prometheus applies its targets a few seconds after it is ready: nothing happens
            # before every target has been scraped, so every counter's rise is seen.
            targets = 1 + len(started)
            await asyncio.to_thread(
                wait_for,
                lambda: len(server.query("up == 1")) == targets,
                within=30,
                what=f"Prometheus scraping all {targets} targets",
            )
            for agent, pod in zip(started, pods, strict=True):
                await create_agent_pod(kube, pod, agent)
            yield Fleet(
                kube=kube,
                upstream=upstream,
                agents=started,
                pods=pods,
                operator=operator,
                operator_url=f"http://127.0.0.1:{operator_port}",
                prometheus=server,
            )
        finally:
            if operator is not None:
                await operator.stop()
            pool.stop_all()
            if prometheus is not None:
                prometheus.stop()
