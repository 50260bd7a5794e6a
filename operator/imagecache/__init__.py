"""imagecache: instant, per-pod image caching for Glance-style image services on Kubernetes.

The package is laid out in three layers:

* ``imagecache.core`` -- pure logic (ids, queue and cache state, eviction, status mapping);
  imports neither aiohttp, kopf nor a Kubernetes client, and never touches the clock or disk.
* ``imagecache.agent`` -- the cache agent: an aiohttp app that owns one cache directory.
* ``imagecache.controller`` -- the kopf operator that reconciles ``ImageCacheRequest`` objects.
"""

__version__ = "0.1.0"
