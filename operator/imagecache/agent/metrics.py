"""Prometheus metrics of one agent, in a per-app `CollectorRegistry` (no global registry).

Names follow Prometheus' conventions (base units, counters exposed with ``_total``, durations as
``_seconds`` histograms) and carry no image id: the chart's dashboard and alerts
(charts/imagecache/files/) read them, and tests/monitoring checks every name they use exists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAILURE_REASONS = (
    # transient (retried)
    "connection",
    "stall",
    "truncated",
    "upstream_5xx",
    "upstream_busy",
    "auth_unavailable",
    "no_room",
    "partial_vanished",
    "partial_replaced",
    "not_a_file",
    # permanent
    "not_found",
    "not_active",
    "unauthorized",
    "refused",
    "redirect",
    "bad_metadata",
    "metadata_too_large",
    "unsupported_hash_algo",
    "no_data",
    "too_long",
    "content_encoding",
    "bad_range",
    "too_large",
    "verification",
    "disk_full",
    "write_failed",
    "internal_error",
)
"""The `reason`s of ``imagecache_failures_total`` exported at 0 from the start, so the first
failure of a kind is an increase that `rate`/`increase` (and the alerts built on them) see.
Another reason still counts; its series just starts at its first failure."""


AUTH_REASONS = ("unauthorized", "auth_unavailable")
"""Upstream error reasons that mean the agent's credentials did not work: the upstream answered
401/403 (``unauthorized``), or Keystone gave no token (``auth_unavailable``)."""


class AgentMetrics:
    """Every metric the agent exports (SPEC §2.7)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cache_bytes = Gauge("imagecache_cache_bytes", "Bytes of cached images.", registry=r)
        self.cache_images = Gauge("imagecache_cache_images", "Cached images.", registry=r)
        self.cache_max_bytes = Gauge(
            "imagecache_cache_max_bytes", "The cache size limit (the max_size setting).", registry=r
        )
        self.filesystem_avail = Gauge(
            "imagecache_cache_filesystem_avail_bytes",
            "Bytes free for the agent on the filesystem of the cache directory.",
            registry=r,
        )
        self.filesystem_size = Gauge(
            "imagecache_cache_filesystem_size_bytes",
            "Size of the filesystem of the cache directory.",
            registry=r,
        )
        self.invalid_files = Gauge(
            "imagecache_invalid_files",
            "Files kept in invalid/ (failed verification or changed on disk; bounded).",
            registry=r,
        )
        self.invalid_bytes = Gauge(
            "imagecache_invalid_bytes", "Bytes of the files kept in invalid/.", registry=r
        )
        self.queue_length = Gauge(
            "imagecache_queue_length", "Images queued or downloading.", registry=r
        )
        self.in_flight = Gauge(
            "imagecache_downloads_in_flight", "Downloads running now.", registry=r
        )
        self.downloaded = Counter(
            "imagecache_downloaded_bytes", "Bytes received from the upstream.", registry=r
        )
        self.cached_bytes = Counter(
            "imagecache_cached_bytes",
            "Bytes of images verified and committed to the cache.",
            registry=r,
        )
        self.peer_downloaded = Counter(
            "imagecache_peer_downloaded_bytes",
            "Bytes received from peer agents (fleet fill), verified against the upstream's "
            "metadata before they are committed.",
            registry=r,
        )
        self.peer_fallbacks = Counter(
            "imagecache_peer_fallbacks",
            "Downloads that fell back from a peer to the upstream, by reason (connection, "
            "stall, not_found, unauthorized, busy, truncated, verification, no_digest, "
            "no_credential, ...).",
            ["reason"],
            registry=r,
        )
        self.peer_serving = Gauge(
            "imagecache_peer_transfers",
            "Cached images being sent to other agents now (at most peer_serve_limit).",
            registry=r,
        )
        self.peer_busy = Counter(
            "imagecache_peer_reads_refused",
            "Peer reads answered 429 because peer_serve_limit transfers were running.",
            registry=r,
        )
        self.duration = Histogram(
            "imagecache_download_duration_seconds",
            "Time to cache one image (successful downloads).",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )
        self.failures = Counter(
            "imagecache_failures", "Failed download attempts.", ["reason"], registry=r
        )
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)
        self.auth_failures = Counter(
            "imagecache_upstream_auth_failures",
            "Upstream requests whose credentials did not work, wherever they were made (queueing "
            "an image, downloading, serving a miss): unauthorized (401/403 from the upstream), "
            "auth_unavailable (no token from Keystone).",
            ["reason"],
            registry=r,
        )
        for reason in AUTH_REASONS:
            self.auth_failures.labels(reason)
        self.hits = Counter("imagecache_hits", "Image reads served from the cache.", registry=r)
        self.misses = Counter("imagecache_misses", "Image reads not in the cache.", registry=r)
        self.evictions = Counter("imagecache_evictions", "Images evicted (LRU).", registry=r)
        self.connections_open = Gauge(
            "imagecache_connections_open", "Client connections open now.", registry=r
        )
        self.connections_refused = Counter(
            "imagecache_connections_refused",
            "Client connections closed unserved: limit, evicted (oldest still sending its "
            "headers), header_timeout, accept_failed (out of file descriptors).",
            ["reason"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "imagecache_worker_restarts", "Worker tasks restarted after a crash.", registry=r
        )

    def bind(
        self,
        *,
        cache_bytes: Callable[[], float],
        cache_images: Callable[[], float],
        queue_length: Callable[[], float],
        in_flight: Callable[[], float],
        invalid_files: Callable[[], float],
        invalid_bytes: Callable[[], float],
    ) -> None:
        """Read the live gauges from the service when scraped."""
        self.cache_bytes.set_function(cache_bytes)
        self.cache_images.set_function(cache_images)
        self.queue_length.set_function(queue_length)
        self.in_flight.set_function(in_flight)
        self.invalid_files.set_function(invalid_files)
        self.invalid_bytes.set_function(invalid_bytes)

    def upstream_error(self, reason: str) -> None:
        """Note an upstream error where it surfaced; credential failures are counted."""
        if reason in AUTH_REASONS:
            self.auth_failures.labels(reason).inc()

    def watch_filesystem(self, cache_dir: Path, *, max_size: int) -> None:
        """Export ``max_size`` and read the cache filesystem's free and total bytes when scraped.

        ``statvfs`` is one cheap system call on a local path, so it runs on the scrape itself.
        """
        self.cache_max_bytes.set(max_size)

        def statvfs() -> os.statvfs_result | None:
            try:
                return os.statvfs(cache_dir)
            except OSError:  # not created yet, or gone: no number rather than a wrong one
                return None

        def avail() -> float:
            stat = statvfs()
            return float(stat.f_bavail * stat.f_frsize) if stat else math.nan

        def size() -> float:
            stat = statvfs()
            return float(stat.f_blocks * stat.f_frsize) if stat else math.nan

        self.filesystem_avail.set_function(avail)
        self.filesystem_size.set_function(size)
