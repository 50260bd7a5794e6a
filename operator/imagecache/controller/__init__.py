"""The kopf operator reconciling ImageCacheRequest objects (SPEC §4)."""
