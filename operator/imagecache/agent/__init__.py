"""The cache agent: one aiohttp process owning one pod's cache directory (SPEC §2)."""
