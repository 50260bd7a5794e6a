"""Prometheus metrics of the operator and the small HTTP server exposing them with /healthz.

Metrics live in a registry owned by one `OperatorMetrics` (no global registry), so several
operators can run in one process (tests):

* ``imagecache_operator_requests{phase}`` -- ImageCacheRequests by phase (gauge);
* ``imagecache_operator_agent_requests_total{method,outcome}`` -- requests to agents by outcome
  (HTTP status, ``unreachable``, ``timeout``, ``invalid``);
* ``imagecache_operator_agent_request_duration_seconds{method}`` -- their latency;
* ``imagecache_operator_api_writes_total{kind,outcome}`` -- status patches and events written
  (``ok``, the HTTP status, or ``error``); a failed one is retried on a later tick;
* ``imagecache_operator_loop_ticks_total`` -- completed passes of the reconcile loop.

``/healthz`` (liveness) answers 500 when the reconcile loop is stuck; ``/readyz`` says whether
this replica is the ``leader`` or a ``standby`` (200 for both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from imagecache.core.aggregation import PHASES


class _PhaseCollector(Collector):
    def __init__(self, phases: dict[str, str]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "imagecache_operator_requests", "ImageCacheRequests by phase", labels=["phase"]
        )
        values = list(self._phases.values())
        for phase in PHASES:
            family.add_metric([phase], values.count(phase))
        yield family


class OperatorMetrics:
    """The operator's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.phases: dict[str, str] = {}
        self.registry.register(_PhaseCollector(self.phases))
        self.agent_requests = Counter(
            "imagecache_operator_agent_requests",
            "Requests sent to agents, by method and outcome",
            labelnames=["method", "outcome"],
            registry=self.registry,
        )
        self.agent_latency = Histogram(
            "imagecache_operator_agent_request_duration_seconds",
            "Latency of requests to agents",
            labelnames=["method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self.api_writes = Counter(
            "imagecache_operator_api_writes",
            "Writes to the Kubernetes API (status patches, events), by outcome",
            labelnames=["kind", "outcome"],
            registry=self.registry,
        )
        self.loop_ticks = Counter(
            "imagecache_operator_loop_ticks",
            "Completed passes of the reconcile loop",
            registry=self.registry,
        )

    def observe_agent_request(self, *, method: str, outcome: str, seconds: float) -> None:
        """Count one request to an agent and record its latency."""
        self.agent_requests.labels(method=method, outcome=outcome).inc()
        self.agent_latency.labels(method=method).observe(seconds)

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Record (or with None, forget) the phase of one request."""
        if phase is None:
            self.phases.pop(uid, None)
        else:
            self.phases[uid] = phase

    def keep_phases(self, uids: set[str]) -> None:
        """Forget the phases of requests that are gone."""
        for uid in [u for u in self.phases if u not in uids]:
            del self.phases[uid]

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def bind_host(host: str) -> str | None:
    """The host to bind for `host`: ``"::"`` means every address of both families.

    asyncio marks each IPv6 listening socket IPv6-only, so binding ``::`` alone would refuse IPv4
    clients (the kubelet's probes on an IPv4 cluster). ``None`` makes it bind ``0.0.0.0`` and
    ``::`` side by side, and skip IPv6 where the kernel has none: dual-stack with a fallback.
    """
    return None if host == "::" else host


@asynccontextmanager
async def serve_probes(
    *,
    metrics: OperatorMetrics,
    host: str,
    port: int,
    alive: Callable[[], bool],
    role: Callable[[], str] = lambda: "leader",
) -> AsyncIterator[int]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on host:port; yields the bound port."""

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_view(_: web.Request) -> web.Response:
        if alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "stuck or stopping"}, status=500)

    async def ready_view(_: web.Request) -> web.Response:
        return web.json_response({"role": role()})

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    app.router.add_get("/readyz", ready_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind_host(host), port)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else port
    try:
        yield bound
    finally:
        await runner.cleanup()
