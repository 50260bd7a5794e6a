"""Prometheus metrics of one agent, in a per-app `CollectorRegistry` (no global registry)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    """Every metric the agent exports (SPEC §2.7)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cache_bytes = Gauge("imagecache_cache_bytes", "Bytes of cached images.", registry=r)
        self.cache_images = Gauge("imagecache_cache_images", "Cached images.", registry=r)
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
