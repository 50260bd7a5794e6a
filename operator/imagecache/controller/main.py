"""``imagecache-operator``: settings, logging, then kopf in-process with metrics and /healthz.

`run_operator` is what `main` runs, and what tests and the demo run in their own event loop
(with their own login, stop flag and ready flag), so several operators can share a process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Sequence

import kopf

from imagecache.controller.agents import HttpAgents, TokenFile
from imagecache.controller.handlers import LoginFn, build_registry, kopf_settings
from imagecache.controller.metrics import OperatorMetrics, serve_probes
from imagecache.controller.polling import AgentPollers
from imagecache.controller.reconciling import Reconciler
from imagecache.controller.settings import OperatorSettings, SettingsError, parse_settings

logger = logging.getLogger("imagecache.controller")

Flag = asyncio.Event | threading.Event
"""A stop or ready flag: an asyncio event, or a threading event when kopf runs in a thread."""


async def run_operator(
    settings: OperatorSettings,
    *,
    login: LoginFn | None = None,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    metrics: OperatorMetrics | None = None,
) -> None:
    """Run one operator until `stop_flag` is set (or a signal, when in the main thread).

    kopf cancels every task created on the loop after it started when it stops, so give the
    operator a loop of its own (a thread: pass `threading.Event` flags) when embedding it.
    """
    metrics = metrics or OperatorMetrics()
    ready: Flag = ready_flag or asyncio.Event()
    stop: Flag = stop_flag or asyncio.Event()
    agents = HttpAgents(
        token=TokenFile(settings.agent_token_file),
        timeout=settings.request_timeout,
        max_concurrency=settings.max_concurrency,
        metrics=metrics,
    )
    async with agents:
        pollers = AgentPollers(agents=agents, interval=settings.poll_interval)
        reconciler = Reconciler(settings=settings, agents=agents, pollers=pollers)
        registry = build_registry(
            settings=settings, reconciler=reconciler, metrics=metrics, login=login
        )
        probes = serve_probes(
            metrics=metrics,
            host=settings.metrics_host,
            port=settings.metrics_port,
            alive=lambda: ready.is_set() and not stop.is_set(),
        )
        async with probes as port:
            logger.info("metrics and /healthz on %s:%d", settings.metrics_host, port)
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(settings),
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=settings.peering is None,
                peering_name=settings.peering,
                stop_flag=stop,
                ready_flag=ready,
                memo=kopf.Memo(),
            )


def configure_logging(level: str) -> None:
    """One line per record on stderr; kopf's per-handler chatter only at DEBUG."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        settings = parse_settings(argv)
    except SettingsError as error:
        print(f"imagecache-operator: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    asyncio.run(run_operator(settings))


if __name__ == "__main__":
    main()
