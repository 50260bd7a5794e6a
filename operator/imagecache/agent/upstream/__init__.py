"""The agent's upstream layer: where image bytes and metadata come from.

The port, the file, HTTP and Glance upstreams, upstream auth, the metadata index.
Imports neither the cache layer nor the HTTP layer.
"""
