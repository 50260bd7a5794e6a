"""An operator loop over fakes, driven tick by tick on a fake clock (unit tests of the loop).

`World` wires a real `Reconciler` and `ReconcileLoop` to `FakeAgents` (agents by endpoint that
queue on PUT and report what they have), `FakeWrites` (the status/event write port over plain
dicts, whose writes the fake watch echoes back), and optionally `FakeReads` (the API's reads:
GET and the resync's lists).
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from imagecache.controller.errors import AgentProtocolError, AgentUnreachable
from imagecache.controller.kubeapi import ObjectRef, WriteFailed
from imagecache.controller.loop import ReconcileLoop
from imagecache.controller.metrics import OperatorMetrics
from imagecache.controller.reads import Listing
from imagecache.controller.reconciling import Reconciler
from imagecache.controller.settings import OperatorSettings
from imagecache.core.planning import RequestView
from imagecache.core.targets import PodInfo
from imagecache.core.wire import CacheListing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeAgents:
    """Agents (by endpoint) that queue on PUT and report what they have."""

    def __init__(self) -> None:
        self.gets: dict[str, int] = {}
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.cached: set[str] = set()
        self.queued: list[str] = []
        self.down = False
        self.hang_deletes = False
        self.invalid: set[str] = set()
        """Endpoints whose listing is not the wire contract's shape."""
        self.gate: asyncio.Event | None = None
        """When set, every GET waits for it (a report in flight)."""
        self.pod_uids: set[str | None] = set()
        """The pod UIDs the calls named (each call must name its target's pod)."""

    async def put_image(
        self,
        endpoint: str,
        image: str,
        *,
        pod_uid: str | None = None,
        source: str | None = None,
        source_pod_uid: str | None = None,
    ) -> int:
        self.pod_uids.add(pod_uid)
        if self.down:
            raise AgentUnreachable("refused", endpoint=endpoint)
        self.puts.append(image)
        if image not in self.cached and image not in self.queued:
            self.queued.append(image)
        return 202

    async def delete_image(self, endpoint: str, image: str, *, pod_uid: str | None = None) -> int:
        self.pod_uids.add(pod_uid)
        self.deletes.append(endpoint)
        if self.hang_deletes:
            await asyncio.Event().wait()
        if self.down:
            raise AgentUnreachable("refused", endpoint=endpoint)
        self.cached.discard(image)
        return 204

    async def cache_report(self, endpoint: str, *, pod_uid: str | None = None) -> CacheListing:
        self.pod_uids.add(pod_uid)
        self.gets[endpoint] = self.gets.get(endpoint, 0) + 1
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise AgentUnreachable("refused", endpoint=endpoint)
        if endpoint in self.invalid:
            raise AgentProtocolError(
                "GET /v2/cache: invalid listing: cached_images[0]: not an object",
                endpoint=endpoint,
            )
        return {
            "cached_images": [{"image_id": i, "size": 1} for i in sorted(self.cached)],
            "queued_images": list(self.queued),
            "caching_images": [],
            "failed_images": [],
        }

    def finish(self) -> None:
        self.cached.update(self.queued)
        self.queued.clear()


class FakeWrites:
    """The write port: applies merge patches to `objects`; fails the next `fail` writes.

    `on_write` is the watch: called with the object's key after each write (the echo).
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 1
        """The API server's resourceVersion counter (one for every object, as etcd's)."""
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.event_counts: dict[str, int] = {}
        self.fail: list[int] = []
        self.on_write: Any = None

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        if self.fail:
            raise WriteFailed("injected", status=self.fail.pop(0))
        if (namespace, name) not in self.objects:
            raise WriteFailed("not found", status=404)
        self.patches.append(patch)
        obj = self.objects[(namespace, name)]
        obj["status"] = merge(obj.get("status") or {}, patch)
        self.rv += 1
        obj["rv"] = str(self.rv)
        if self.on_write is not None:
            self.on_write((namespace, name))
        return {"metadata": {"resourceVersion": obj["rv"]}, "status": obj["status"]}

    async def post_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> str:
        self.events.append((type, reason))
        name = f"{ref.name}.{len(self.events)}"
        self.event_counts[name] = 1
        return name

    async def patch_event(self, namespace: str, name: str, *, count: int) -> None:
        self.event_counts[name] = count


def merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def loop_settings(**overrides: Any) -> OperatorSettings:
    base: dict[str, Any] = {
        "poll_interval": 1,
        "recheck_interval": 10,
        "retry_backoff": 1,
        "retry_backoff_cap": 4,
        "status_interval": 5,
        "evict_timeout": 3,
    }
    return OperatorSettings(**{**base, **overrides})


def pod(name: str = "p", ip: str = "10.0.0.1") -> PodInfo:
    return PodInfo(namespace="ns", name=name, uid=f"u-{name}", ip=ip, phase="Running", ready=True)


def request(name: str = "r", spec: dict[str, Any] | None = None, **kw: Any) -> RequestView:
    base: dict[str, Any] = {
        "namespace": "ns",
        "name": name,
        "uid": f"uid-{name}",
        "generation": 1,
        "resource_version": "1",
        "spec": spec or {"image": "img", "pod": "p"},
        "status": {},
    }
    return RequestView(**{**base, **kw})


class World:
    """A reconciler and loop over fake agents and a fake write port, driven tick by tick.

    The fake watch delivers every write back to the loop at once, unless `lag` holds it.
    """

    def __init__(self, *, reads: bool = False, agents: Any = None, **settings: Any) -> None:
        self.clock, self.writes = FakeClock(), FakeWrites()
        self.agents = agents if agents is not None else FakeAgents()
        self.settings = loop_settings(**settings)
        self.reads = FakeReads(self) if reads else None
        self.api_pods: dict[str, PodInfo] = {"p": pod()}
        self.reconciler = Reconciler(
            settings=self.settings,
            agents=self.agents,
            monotonic=self.clock,
            wallclock=self.wallclock,
        )
        self.metrics = OperatorMetrics()
        self.loop = ReconcileLoop(
            settings=self.settings,
            reconciler=self.reconciler,
            writes=self.writes,
            metrics=self.metrics,
            reads=self.reads,
            monotonic=self.clock,
        )
        self.specs: dict[tuple[str, str], dict[str, Any]] = {}
        self.lag = False  # True: the watch does not deliver writes (a slow watch)
        self.held: list[dict[str, Any]] = []
        """The bodies the lagging watch holds back, as they were when written."""
        self.writes.on_write = self._echo
        self.loop.attach(pods={"ns": [pod()]})

    def wallclock(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock.now)

    def body(self, name: str) -> dict[str, Any]:
        """The object as the watch would deliver it now."""
        obj = self.writes.objects[("ns", name)]
        return {
            "metadata": {
                "namespace": "ns",
                "name": name,
                "uid": f"uid-{name}",
                "generation": 1,
                "resourceVersion": obj["rv"],
            },
            "spec": self.specs[("ns", name)],
            "status": obj["status"],
        }

    def add(self, name: str, spec: dict[str, Any] | None = None) -> None:
        self.specs[("ns", name)] = spec or {"image": "img", "pod": "p"}
        self.writes.rv += 1
        self.writes.objects[("ns", name)] = {"status": {}, "rv": str(self.writes.rv)}
        self.loop.observe_request("ADDED", self.body(name))

    def delete_unseen(self, name: str) -> None:
        """Delete the object in the API while the watch is down (the loop is not told)."""
        del self.writes.objects[("ns", name)]
        self.writes.rv += 1

    def edit(self, name: str, status: dict[str, Any], rv: str) -> None:
        """Someone else writes the status; the watch shows it."""
        self.writes.objects[("ns", name)].update(status=status, rv=rv)
        self.loop.observe_request("MODIFIED", self.body(name))

    def deliver(self, count: int | None = None) -> None:
        """The lagging watch catches up, delivering held writes (`count` of them) in order."""
        count = len(self.held) if count is None else count
        for body in self.held[:count]:
            self.loop.observe_request("MODIFIED", body)
        del self.held[:count]

    def _echo(self, key: tuple[str, str]) -> None:
        if self.lag:
            self.held.append(copy.deepcopy(self.body(key[1])))
        else:
            self.loop.observe_request("MODIFIED", self.body(key[1]))

    def set_pods(self, pods: list[PodInfo]) -> None:
        """Pods added or changed, seen by the watch."""
        for info in pods:
            self.api_pods[info.name] = info
            self.loop.observe_pod("ADDED", pod_body(info))

    def status(self, name: str = "r") -> dict[str, Any]:
        return dict(self.writes.objects[("ns", name)]["status"])

    async def tick(self, advance: float = 1.0) -> None:
        self.clock.now += advance
        await self.loop.flush()


class FakeReads:
    """The API's reads over the `World`'s objects and pods (`api_pods`: the API's truth)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.gets: list[str] = []

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(name)
        if (namespace, name) not in self._world.writes.objects:
            return None
        return self._world.body(name)

    async def list_requests(self, namespace: str | None) -> Listing:
        items = [self._world.body(name) for _, name in self._world.writes.objects]
        return Listing(items=items, resource_version=str(self._world.writes.rv))

    async def list_pods(self, namespace: str | None) -> Listing:
        items = [pod_body(p) for p in self._world.api_pods.values()]
        return Listing(items=items, resource_version=str(self._world.writes.rv))


def pod_body(info: PodInfo) -> dict[str, Any]:
    """A pod body `pod_info` reads back as `info`."""
    return {
        "metadata": {
            "namespace": info.namespace,
            "name": info.name,
            "uid": info.uid,
            "labels": dict(info.labels),
            "annotations": dict(info.annotations),
        },
        "spec": {"nodeName": info.node_name},
        "status": {
            "podIP": info.ip,
            "phase": info.phase,
            "conditions": [{"type": "Ready", "status": "True" if info.ready else "False"}],
        },
    }
