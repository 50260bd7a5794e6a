"""The agent's HTTP layer: app factory, server, connections, middlewares, errors, auth, views.

The top layer: it calls the cache layer's facade; nothing below imports it.
"""
