"""Prometheus metrics of the operator and the small HTTP server exposing them with /healthz.

Metrics live in a registry owned by one `OperatorMetrics` (no global registry), so several
operators can run in one process (tests):

* ``imagecache_operator_requests{phase}`` -- ImageCacheRequests by phase (gauge);
* ``imagecache_operator_request_stall_seconds`` -- the longest time any Queued or Caching
  request has gone without progress (its phase or its bytes changing); 0 when none waits;
* ``imagecache_operator_time_to_cached_seconds`` -- from this operator first seeing a request
  (or a Cached one falling back) not Cached to its Cached status (histogram);
* ``imagecache_operator_agent_requests_total{method,outcome}`` -- requests to agents by outcome
  (HTTP status, ``unreachable``, ``timeout``, ``invalid``);
* ``imagecache_operator_agent_request_duration_seconds{method}`` -- their latency;
* ``imagecache_operator_api_writes_total{kind,outcome}`` -- status patches and events written
  (``ok``, the HTTP status, or ``error``); a failed one is retried on a later tick;
* ``imagecache_operator_loop_ticks_total`` -- completed passes of the reconcile loop, and
  ``imagecache_operator_loop_tick_duration_seconds`` -- how long each took (histogram);
* ``imagecache_operator_leader`` -- 1 while this replica leads (holds the Lease, or runs
  without leader election), 0 on a standby;
* ``imagecache_operator_loop_lag_seconds`` -- how late the event loop ran its last timer,
  ``imagecache_operator_busy_ratio`` -- the process's CPU seconds per second over the last
  second, and ``imagecache_operator_poll_stretch`` -- the factor agent polls are spaced by
  because of either (1: every ``poll_interval``; `controller.pace`).

The chart's dashboard and alerts (charts/imagecache/files/) read these; tests/monitoring checks
every name they use exists on a real scrape. Label sets they rate (agent requests that fail to
connect or time out, writes) are exported at 0 from the start, so a first one is an increase.

``/healthz`` (liveness) answers 500 when the reconcile loop is stuck; ``/readyz`` says whether
this replica is the ``leader`` or a ``standby`` (200 for both).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from imagecache.core.aggregation import PHASES

AGENT_METHODS = ("GET", "PUT", "DELETE")
"""The requests the operator sends to agents (the ``method`` label)."""
WAITING = ("Queued", "Caching")
"""Phases in which a request is expected to progress (the stall clock runs)."""


@dataclass
class _Track:
    """What the metrics remember of one request between its reconciles."""

    phase: str
    signature: tuple[str, Any]
    progressed_at: float
    pending_since: float | None


class _RequestCollector(Collector):
    """Requests by phase, and the longest stall among the waiting ones, read when scraped."""

    def __init__(self, tracks: dict[str, _Track], monotonic: Callable[[], float]) -> None:
        self._tracks = tracks
        self._monotonic = monotonic

    def collect(self) -> Iterator[Metric]:
        tracks = list(self._tracks.values())
        family = GaugeMetricFamily(
            "imagecache_operator_requests", "ImageCacheRequests by phase", labels=["phase"]
        )
        phases = [t.phase for t in tracks]
        for phase in PHASES:
            family.add_metric([phase], phases.count(phase))
        yield family
        now = self._monotonic()
        stalls = [now - t.progressed_at for t in tracks if t.phase in WAITING]
        yield GaugeMetricFamily(
            "imagecache_operator_request_stall_seconds",
            "Longest time any Queued or Caching request has gone without progress "
            "(0 when none waits)",
            value=max(stalls, default=0.0),
        )


class OperatorMetrics:
    """The operator's metrics, in their own registry."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._monotonic = monotonic
        self._tracks: dict[str, _Track] = {}
        self.registry.register(_RequestCollector(self._tracks, monotonic))
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
        self.tick_duration = Histogram(
            "imagecache_operator_loop_tick_duration_seconds",
            "Duration of one pass of the reconcile loop",
            # A pass only starts what is due (the work queue), so most take well under 1 ms.
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2),
            registry=self.registry,
        )
        self.time_to_cached = Histogram(
            "imagecache_operator_time_to_cached_seconds",
            "Time from a request seen not Cached (new, or fallen back) to its Cached status",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry,
        )
        self.leader = Gauge(
            "imagecache_operator_leader",
            "1 while this replica leads (holds the Lease, or runs without election), else 0",
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "imagecache_operator_loop_lag_seconds",
            "How late the operator's event loop ran its last timer (a saturated process)",
            registry=self.registry,
        )
        self.busy = Gauge(
            "imagecache_operator_busy_ratio",
            "The operator's CPU seconds per second over the last second (1: a core saturated)",
            registry=self.registry,
        )
        self.poll_stretch = Gauge(
            "imagecache_operator_poll_stretch",
            "Factor agent polls are spaced by (poll_interval times this) while saturated",
            registry=self.registry,
        )
        # Series that exist at 0 from the start, so the first request, failure or write is an
        # increase that `rate`/`increase` (and the chart's alerts and panels) see.
        for method in AGENT_METHODS:
            self.agent_latency.labels(method=method)
            for outcome in ("unreachable", "timeout"):
                self.agent_requests.labels(method=method, outcome=outcome)
        for kind in ("status", "event"):
            for outcome in ("ok", "error"):
                self.api_writes.labels(kind=kind, outcome=outcome)

    def observe_agent_request(self, *, method: str, outcome: str, seconds: float) -> None:
        """Count one request to an agent and record its latency."""
        self.agent_requests.labels(method=method, outcome=outcome).inc()
        self.agent_latency.labels(method=method).observe(seconds)

    def observe_status(self, uid: str, status: Mapping[str, Any]) -> None:
        """Record the status the loop computed for one request (every reconcile of it).

        Feeds the phase gauge, the stall clock (restarted whenever the phase or the progress
        bytes change) and, on the move to Cached, the time-to-Cached histogram.
        """
        phase = str(status.get("phase") or "")
        progress = status.get("progress")
        done = progress.get("bytes") if isinstance(progress, Mapping) else None
        signature = (phase, done)
        now = self._monotonic()
        track = self._tracks.get(uid)
        if track is None:
            pending = None if phase == "Cached" else now
            self._tracks[uid] = _Track(phase, signature, now, pending)
            return
        if track.signature != signature:
            track.phase, track.signature, track.progressed_at = phase, signature, now
        if phase == "Cached":
            if track.pending_since is not None:
                self.time_to_cached.observe(now - track.pending_since)
                track.pending_since = None
        elif track.pending_since is None:
            track.pending_since = now

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Record (or with None, forget) the phase of one request."""
        if phase is None:
            self._tracks.pop(uid, None)
        else:
            self.observe_status(uid, {"phase": phase})

    def keep_phases(self, uids: set[str]) -> None:
        """Forget the requests that are gone."""
        for uid in [u for u in self._tracks if u not in uids]:
            del self._tracks[uid]

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
