"""The agent's cache layer: the `ImageCache` facade and everything under it.

Queue, workers, downloads, room, pins, locks, store, database, recovery and maintenance.
Imports the upstream layer, never the HTTP layer.
"""
