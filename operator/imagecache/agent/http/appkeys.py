"""Typed application keys shared by the app factory and the views."""

from __future__ import annotations

from aiohttp import web

from imagecache.agent.cache.facade import ImageCache
from imagecache.agent.metrics import AgentMetrics
from imagecache.agent.settings import AgentSettings

SETTINGS = web.AppKey("settings", AgentSettings)
CACHE = web.AppKey("cache", ImageCache)
METRICS = web.AppKey("metrics", AgentMetrics)
