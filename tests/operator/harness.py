"""Shared machinery for the operator's end-to-end tests (emulator + kopf + real agents).

* `Images`: small deterministic images on an HTTP upstream (faults available) in a thread;
* `AgentPool`: real ``imagecache-agent`` processes on 127.0.0.2, .3, ... (the "pod IPs");
* `RunningOperator` / `start_operator`: the operator run in-process (`run_operator`) on the
  test's event loop, logged in to the emulator, with short poll/recheck/backoff settings;
* `wait_for_status`: poll an object until a predicate holds, bounded by a deadline;
* `events_until`: the same for an object's events (posted right after their status write).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import kopf
from aiohttp import web

from imagecache.controller.main import run_operator
from imagecache.controller.metrics import OperatorMetrics
from imagecache.controller.settings import OperatorSettings
from tests.kube.emulator import Emulator
from tests.support.agents import AgentProcess, free_port

ICR = "imagecache.dev/v1alpha1/imagecacherequests"
TOKEN = "operator-secret-token"
PORT_ANNOTATION = "imagecache.dev/port"
"""The pod annotation that tells the operator its agent's port."""

# Short schedules so every scenario settles in seconds.
FAST = {
    "poll_interval": 0.2,
    "recheck_interval": 1.0,
    "request_timeout": 2.0,
    "retry_backoff": 0.1,
    "retry_backoff_cap": 0.5,
    "evict_timeout": 2.0,
    "metrics_port": 0,
    "metrics_host": "127.0.0.1",
}


def image_bytes(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (sha512 chain), `size` long."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block * 64
    return bytes(out[:size])


def image_id(n: int) -> str:
    """A Glance-style UUID for test image number `n`."""
    return f"00000000-0000-4000-8000-{n:012d}"


@dataclass
class AgentPool:
    """Real agents on 127.0.0.2+; all stopped at teardown."""

    root: Path
    upstream: str
    token_file: Path
    agents: list[AgentProcess] = field(default_factory=list)

    def start(self, index: int, upstream: str | None = None, **kwargs: Any) -> AgentProcess:
        """Start agent number `index` (>= 2) on 127.0.0.<index>."""
        agent = AgentProcess(
            cache_dir=self.root / f"agent-{index}" / "cache",
            upstream=upstream or self.upstream,
            host=f"127.0.0.{index}",
            token_file=self.token_file,
            **kwargs,
        )
        agent.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        agent.start()
        self.agents.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            agent.kill()


def agent_get(agent: AgentProcess, path: str, token: str = TOKEN) -> Any:
    """A blocking GET to an agent (JSON answer), for assertions."""
    request = urllib.request.Request(agent.url + path, headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def agent_delete(agent: AgentProcess, image: str) -> int:
    """``DELETE /v2/cache/{image}`` on the agent (blocking); the status code."""
    request = urllib.request.Request(
        f"{agent.url}/v2/cache/{image}", method="DELETE", headers={"X-Auth-Token": TOKEN}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def cached_file(agent: AgentProcess, image: str) -> bytes:
    """The bytes the agent serves for a cached image (``GET /v2/images/{id}/file``)."""
    request = urllib.request.Request(
        f"{agent.url}/v2/images/{image}/file", headers={"X-Auth-Token": TOKEN}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def agent_has(agent: AgentProcess, image: str) -> bool:
    """True when the agent lists the image as cached."""
    listing = agent_get(agent, "/v2/cache")
    return any(entry["image_id"] == image for entry in listing["cached_images"])


@dataclass
class RunningOperator:
    """An operator on its own thread and event loop (kopf cancels every task on its loop when
    it stops, so it cannot share the test's loop); `stop()` ends it, bounded."""

    thread: threading.Thread
    stop_flag: threading.Event
    metrics: OperatorMetrics
    errors: list[BaseException]

    async def stop(self, within: float = 20.0) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, within)
        if self.thread.is_alive():
            raise TimeoutError(f"the operator did not stop within {within}s")
        if self.errors:
            raise RuntimeError("the operator failed") from self.errors[0]


def operator_settings(token_file: Path, **overrides: Any) -> OperatorSettings:
    """Fast test settings (`FAST`) with the agent token file and any overrides."""
    return OperatorSettings(**{**FAST, "agent_token_file": token_file, **overrides})


async def start_operator(
    kube: Emulator,
    *,
    token_file: Path | None,
    within: float = 20.0,
    login: Callable[..., kopf.ConnectionInfo] | None = None,
    **overrides: Any,
) -> RunningOperator:
    """Run an operator against the emulator in a thread; return once kopf is ready.

    `login` replaces the default one (the emulator's URL and token), e.g. to rotate tokens."""
    settings = OperatorSettings(**{**FAST, "agent_token_file": token_file, **overrides})

    def default_login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url, token=kube.token, default_namespace="default")

    stop, ready, metrics = threading.Event(), threading.Event(), OperatorMetrics()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            asyncio.run(
                run_operator(
                    settings,
                    login=login or default_login,
                    stop_flag=stop,
                    ready_flag=ready,
                    metrics=metrics,
                )
            )
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=body, name="operator", daemon=True)
    thread.start()
    running = RunningOperator(thread=thread, stop_flag=stop, metrics=metrics, errors=errors)
    await wait_until(
        lambda: ready.is_set() or not thread.is_alive(), within=within, what="operator ready"
    )
    if not ready.is_set():
        await running.stop()
        raise RuntimeError("the operator exited before it was ready")
    return running


def request_body(
    name: str,
    image: str,
    *,
    pod: str | None = None,
    selector: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An ImageCacheRequest manifest."""
    body_spec: dict[str, Any] = {"image": image, **spec}
    if pod is not None:
        body_spec["pod"] = pod
    if selector is not None:
        body_spec["podSelector"] = dict(selector)
    return {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body_spec,
    }


async def wait_for_status(
    kube: Emulator,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    within: float = 30.0,
    namespace: str = "default",
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Poll the object until `predicate(status)` holds; every status seen goes to `seen`."""
    deadline = time.monotonic() + within
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = await kube.client.get(ICR, name, namespace=namespace)
        last = dict((obj or {}).get("status") or {})
        if seen is not None and (not seen or seen[-1] != last):
            seen.append(last)
        if predicate(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: condition not met within {within}s; last status: {last}")


async def wait_until(check: Callable[[], Any], *, within: float = 30.0, what: str = "") -> Any:
    """Poll a (sync or async) check until it returns a truthy value, bounded."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not met within {within}s: {what}")


async def events_until(
    kube: Emulator,
    name: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    *,
    within: float = 10.0,
    namespace: str = "default",
) -> list[dict[str, Any]]:
    """The object's events once `predicate(events)` holds (events follow their status write)."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = await kube.client.events_for(namespace, name)
        return predicate(found)

    await wait_until(check, within=within, what=f"events of {name}")
    return found


def reasons_end_with(reason: str) -> Callable[[list[dict[str, Any]]], bool]:
    """An events predicate: the last event has this reason."""
    return lambda events: bool(events) and events[-1].get("reason") == reason


def has_event(kind: str, reason: str) -> Callable[[list[dict[str, Any]]], bool]:
    """An events predicate: some event of this type and reason exists."""
    return lambda events: any(e["type"] == kind and e["reason"] == reason for e in events)


def phase(expected: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the status has this phase (and reason)."""
    return lambda s: s.get("phase") == expected and (reason is None or s.get("reason") == reason)


class Listening(Protocol):
    """Anything at an address and port: an agent process, a recording listener."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


async def create_agent_pod(
    kube: Emulator,
    name: str,
    agent: Listening,
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    ready: bool | None = None,
) -> dict[str, Any]:
    """A Running pod whose IP and `PORT_ANNOTATION` lead to `agent` (Ready unless told)."""
    return await kube.client.create_pod(
        namespace,
        name,
        ip=agent.host,
        labels=labels,
        ready=ready,
        annotations={PORT_ANNOTATION: str(agent.port)},
    )


class _Listener:
    """A loopback HTTP listener on `host` at a free port, for the duration of an ``async with``.
    Subclasses add their routes."""

    def __init__(self, host: str) -> None:
        self.host, self.port = host, free_port(host)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class HeaderRecorder(_Listener):
    """A listener posing as an empty agent (``GET`` answers an empty listing, anything else
    202) that keeps the headers of every request it gets: what a pod a selector matches could
    steal. Use as an async context manager."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.headers: list[dict[str, str]] = []

    def values(self, name: str) -> list[str]:
        """Every value of header `name` received, in order."""
        return [got[name] for got in self.headers if name in got]

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if request.method == "GET":
            return web.json_response({"cached_images": [], "queued_images": []})
        return web.Response(status=202)


ListingHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ListingServer(_Listener):
    """A listener posing as an agent whose ``GET /v2/cache`` is answered by `handler` (tests
    that feed the operator bad answers). Use as an async context manager."""

    def __init__(self, handler: ListingHandler, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self._handler = handler

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/cache", self._handler)
