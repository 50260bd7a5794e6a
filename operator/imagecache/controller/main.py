"""``imagecache-operator``: settings, logging, then kopf and the reconcile loop in-process.

`run_operator` is what `main` runs, and what tests and the demo run in their own event loop
(with their own login, stop flag and ready flag). Order of things:

1. log in (the same login function kopf uses; key material kept in memory files) and build the
   one kubernetes_asyncio ApiClient (`kubeclient`: credentials refreshed when their files change
   and on a 401) that the write port, leader election and the per-pod agent tokens share;
2. serve ``/metrics``, ``/healthz`` and ``/readyz`` (``standby`` until elected);
3. with ``leader_election``, wait for the Lease: a standby runs neither kopf nor the loop, so it
   writes nothing at all;
4. run kopf (watches, indexes, the evict-on-delete finalizer), the reconcile loop and, when
   elected, the Lease renewal side by side. Losing the Lease stops everything at once and
   `run_operator` raises `LeaseLost` (`main` exits 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import kopf

from imagecache.controller.agents import HttpAgents
from imagecache.controller.credentials import (
    AgentCredentials,
    PodTokenCredentials,
    TokenFile,
    TokenFileCredentials,
)
from imagecache.controller.handlers import LoginFn, build_registry, default_login, kopf_settings
from imagecache.controller.kubeapi import ApiWrites
from imagecache.controller.kubeclient import (
    ApiCredentials,
    MemoryFiles,
    NoCredentials,
    RefreshingApiClient,
    credential_files,
    open_api_client,
)
from imagecache.controller.leader import LeaderElector, LeaseConfig, LeaseLost
from imagecache.controller.loop import ReconcileLoop
from imagecache.controller.metrics import OperatorMetrics, serve_probes
from imagecache.controller.pace import PollPace
from imagecache.controller.reads import ApiReads
from imagecache.controller.reconciling import Reconciler
from imagecache.controller.settings import (
    OperatorSettings,
    SettingsError,
    lease_identity,
    parse_settings,
)

logger = logging.getLogger("imagecache.controller")

Flag = asyncio.Event | threading.Event
"""A stop or ready flag: an asyncio event, or a threading event when kopf runs in a thread."""

FLAG_POLL = 0.1


async def wait_flag(flag: Flag) -> None:
    """Return once `flag` is set (a threading flag is looked at every 0.1 s)."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
        return
    while not flag.is_set():  # noqa: ASYNC110 -- a threading flag cannot be awaited
        await asyncio.sleep(FLAG_POLL)


def _in_memory_login(login: LoginFn, memory: MemoryFiles) -> LoginFn:
    """`login` whose certificate and key data kopf reads from memory files, not /tmp."""

    def wrapped(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login(**kwargs)
        return None if info is None else memory.in_memory(info)

    return wrapped


def _agent_credentials(settings: OperatorSettings, api: RefreshingApiClient) -> AgentCredentials:
    """Per-pod TokenRequest tokens (``agent_auth = kubernetes``), else the shared token file."""
    if settings.agent_auth == "kubernetes":
        assert settings.service_account is not None
        return PodTokenCredentials(
            api,
            namespace=settings.service_account_namespace,
            service_account=settings.service_account,
            seconds=settings.agent_token_seconds,
        )
    return TokenFileCredentials(TokenFile(settings.agent_token_file))


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
    memory = MemoryFiles()
    try:
        await _run(settings, login, stop_flag, ready_flag, metrics, memory)
    finally:
        memory.close()


async def _run(
    settings: OperatorSettings,
    login: LoginFn | None,
    stop_flag: Flag | None,
    ready_flag: Flag | None,
    metrics: OperatorMetrics,
    memory: MemoryFiles,
) -> None:
    login_fn = _in_memory_login(login or default_login, memory)
    ready: Flag = ready_flag or asyncio.Event()
    stop: Flag = stop_flag or asyncio.Event()
    credentials = ApiCredentials(
        lambda: login_fn(settings=kopf_settings(settings), logger=logger),
        files=credential_files() if login is None else (),
        memory=memory,
    )
    api = await open_api_client(credentials)
    agents = HttpAgents(
        credentials=_agent_credentials(settings, api),
        timeout=settings.request_timeout,
        max_concurrency=settings.max_concurrency,
        metrics=metrics,
    )
    async with api, agents:
        pace = PollPace.from_settings(settings)
        reconciler = Reconciler(
            settings=settings, agents=agents, poll_interval=lambda: pace.interval
        )
        elector = (
            LeaderElector(
                api,
                LeaseConfig(
                    name=settings.lease_name,
                    namespace=settings.lease_namespace,
                    identity=lease_identity(),
                    lease_duration=settings.lease_duration,
                    renew_deadline=settings.lease_renew_deadline,
                    retry_period=settings.lease_retry_period,
                ),
            )
            if settings.leader_election
            else None
        )
        writes = ApiWrites(api, timeout=max(30.0, settings.request_timeout * 3), gate=elector)
        reads = ApiReads(api, timeout=max(30.0, settings.request_timeout * 3))
        loop = ReconcileLoop(
            settings=settings,
            reconciler=reconciler,
            writes=writes,
            reads=reads,
            metrics=metrics,
            pace=pace,
        )
        halt = asyncio.Event()

        def role() -> str:
            return "standby" if elector is not None and not elector.leading else "leader"

        metrics.leader.set_function(lambda: 1.0 if role() == "leader" else 0.0)
        probes = serve_probes(
            metrics=metrics,
            host=settings.metrics_host,
            port=settings.metrics_port,
            alive=lambda: not halt.is_set() and not loop.stuck(),
            role=role,
        )
        async with probes as port:
            logger.info("metrics, /healthz and /readyz on %s:%d", settings.metrics_host, port)
            watcher = asyncio.create_task(_halt_on(stop, halt), name="stop flag")
            try:
                if elector is not None:
                    if not await _elected(elector, halt):
                        return
                    logger.info("elected leader of %s", settings.lease_name)
                await _lead(settings, login_fn, loop, reconciler, writes, elector, halt, ready)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)


async def _halt_on(stop: Flag, halt: asyncio.Event) -> None:
    await wait_flag(stop)
    halt.set()


async def _elected(elector: LeaderElector, halt: asyncio.Event) -> bool:
    """Wait for the Lease (True) or for the stop flag (False)."""
    acquiring = asyncio.create_task(elector.acquire(), name="lease acquire")
    halted = asyncio.create_task(halt.wait(), name="halt")
    await asyncio.wait({acquiring, halted}, return_when=asyncio.FIRST_COMPLETED)
    halted.cancel()
    if not acquiring.done():
        acquiring.cancel()
        await asyncio.gather(acquiring, halted, return_exceptions=True)
        return False
    await asyncio.gather(halted, return_exceptions=True)
    acquiring.result()
    return True


async def _lead(
    settings: OperatorSettings,
    login_fn: LoginFn,
    loop: ReconcileLoop,
    reconciler: Reconciler,
    writes: ApiWrites,
    elector: LeaderElector | None,
    halt: asyncio.Event,
    ready: Flag,
) -> None:
    """kopf, the loop and the Lease renewal side by side, until halted or the Lease is lost."""
    registry = build_registry(
        settings=settings, loop=loop, reconciler=reconciler, writes=writes, login=login_fn
    )
    lost: list[LeaseLost] = []

    async def hold(elector: LeaderElector) -> None:
        try:
            await elector.hold()
        except LeaseLost as error:
            logger.error("lost the lease: %s; stopping at once", error)
            lost.append(error)
            halt.set()
            ticking.cancel()  # no write after the Lease is gone, not even this tick's

    # Created before kopf starts, so kopf's end-of-run cleanup leaves them to us.
    ticking = asyncio.create_task(loop.run(halt), name="reconcile loop")
    holding = asyncio.create_task(hold(elector), name="lease") if elector is not None else None
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(settings),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=True,
            stop_flag=halt,
            ready_flag=ready,
            memo=kopf.Memo(),
        )
    finally:
        halt.set()
        tasks = [t for t in (ticking, holding) if t is not None]
        if holding is not None and not lost:
            holding.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if elector is not None and not lost:
            with contextlib.suppress(Exception):
                await elector.release()
    if lost:
        raise lost[0]


def configure_logging(level: str) -> None:
    """One line per record on stderr; kopf's per-handler chatter only at DEBUG."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


GC_THRESHOLDS = (10_000, 20, 20)
"""The cyclic collector's thresholds for the operator process (Python's defaults: 700, 10, 10).

At fleet scale the operator allocates a body per watch event and per API answer; most of it is
freed by reference counting, but at the defaults the collector still ran 4,000 young and 33
full collections in a 10,000-request run, ~14 s of its ~70 s of CPU (measured with
`gc.callbacks`). With these: 150 young, 7 middle, no full collection during the run, ~4 s,
and the same peak RSS. Full collections still come as the heap grows (every 20 middle ones,
and Python's own 25 % rule).
"""


def tune_gc() -> None:
    """Freeze what start-up allocated (modules, kopf's registry) and space out collections.

    Frozen objects are never traversed again, so every full collection skips them.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (exit 1 when the Lease is lost, 2 on bad settings)."""
    try:
        settings = parse_settings(argv)
    except SettingsError as error:
        print(f"imagecache-operator: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    tune_gc()
    try:
        asyncio.run(run_operator(settings))
    except LeaseLost:
        raise SystemExit(1) from None
    except NoCredentials as error:
        print(f"imagecache-operator: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
