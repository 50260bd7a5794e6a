"""A strict Kubernetes API emulator for tests, on kmock, running in a thread of its own.

`StrictKubernetes` is a kmock handler: the kmock DSL still works on it for fault injection
(``emulator.mock["patch", kmock.subresource("status")][:1] << 500`` fails one status patch),
and every request is recorded (``emulator.requests``). What no reaction catches is served
by `routes.Router` over `store.Store`, which behaves like the real API server where the operator
relies on it (see `store`, `schema`, `selectors`, `patching`, `tables`, `discovery`).

The server runs in its own thread with its own event loop, so it keeps answering while a test
blocks (``subprocess.run(["kubectl", ...])``, kopf's ``KopfRunner``). `run_emulator` starts it
(CRD loaded, namespace ``default`` created, a kubeconfig written) and yields an `Emulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import traceback
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

from tests.kube.client import KubeClient
from tests.kube.paths import parse_api_path
from tests.kube.resources import builtin_types
from tests.kube.routes import Router, render_error
from tests.kube.store import CRD_KEY, NS_KEY, Store

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "imagecacherequests.yaml"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def _action(method: str, name: str | None, params: dict[str, str]) -> kmock.action | None:
    if method == "GET" and params.get("watch") in ("true", "1"):
        return kmock.action.WATCH
    if name is None:
        return {"GET": kmock.action.LIST, "POST": kmock.action.CREATE}.get(method)
    return {
        "GET": kmock.action.FETCH,
        "PATCH": kmock.action.UPDATE,
        "PUT": kmock.action.UPDATE,
        "DELETE": kmock.action.DELETE,
    }.get(method)


@attrs.define(kw_only=True)
class StrictKubernetes(kmock.RawHandler):
    """A kmock handler whose fallback is the strict store; user reactions still come first."""

    router: Router = attrs.field(factory=lambda: Router(Store(builtin_types())))

    def __attrs_post_init__(self) -> None:
        self.fallback << self.router.serve

    @property
    def store(self) -> Store:
        return self.router.store

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Parse the path ourselves: kmock 0.8's parser fails on /api/v1/namespaces[/x].
        body = await raw_request.read()
        path = parse_api_path(raw_request.path)
        params = dict(raw_request.query)
        resource = (
            kmock.resource(group=path.group, version=path.version, plural=path.plural)
            if path.is_resource
            else None
        )
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode("utf-8", "replace"),
            data=_json_or_none(body),
            action=_action(raw_request.method, path.name, params) if path.is_resource else None,
            resource=resource,
            namespace=path.namespace,
            name=path.name,
            subresource=path.subresource,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except rendering.StreamingError as e:  # the stream has started: nothing more to say
            if e.__cause__ is not None:
                traceback.print_exception(e.__cause__)
            response: aiohttp.web.StreamResponse = e.args[0]
            return response
        except Exception as e:
            code, status = render_error(e)
            if code >= 500:
                traceback.print_exc()
            return aiohttp.web.json_response(status, status=code)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _kubeconfig(url: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "tester", "namespace": "default"},
            }
        ],
        "current-context": "emulator",
    }


class _ServerThread(threading.Thread):
    """Runs the handler and its HTTP server on an event loop owned by this thread."""

    def __init__(self, crds: list[dict[str, Any]], namespaces: list[str]) -> None:
        super().__init__(name="kube-emulator", daemon=True)
        self.handler = StrictKubernetes()
        self.url = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._crds = crds
        self._namespaces = namespaces
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        store = self.handler.store
        for crd in self._crds:
            store.create(store.types[CRD_KEY], None, crd)
        for ns in self._namespaces:
            store.create(store.types[NS_KEY], None, {"metadata": {"name": ns}})
        async with self.handler, kmock.Server(self.handler) as server:
            self.url = str(server.url).rstrip("/")
            self.ready.set()
            await self._stop_event.wait()
            self.handler.router.closing = True

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(STOP_TIMEOUT)
        if self.is_alive():
            raise RuntimeError(f"the emulator did not stop within {STOP_TIMEOUT}s")


@dataclass
class Emulator:
    """A running emulator, as the `kube` fixture and `run_emulator` yield it."""

    url: str
    """Base URL, e.g. ``http://127.0.0.1:40123`` (loopback, random port)."""
    kubeconfig: Path
    """A kubeconfig for kubectl and kopf (``KUBECONFIG=...``): token auth, namespace default."""
    token: str
    """The bearer token in the kubeconfig (the emulator accepts any)."""
    client: KubeClient
    """An async client bound to the event loop that entered `run_emulator`."""
    mock: StrictKubernetes
    """The kmock handler: ``[...] << ...`` to inject faults (``list(mock)``: all requests)."""

    @property
    def requests(self) -> list[rendering.Request]:
        """Every request served so far, oldest first (``.method``, ``.url``, ``.params``)."""
        return list(self.mock._requests)

    @property
    def store(self) -> Store:
        """The emulator's state; read it only while nothing writes (it lives in another thread)."""
        return self.mock.store

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point kubectl and kopf here."""
        return {"KUBECONFIG": str(self.kubeconfig)}


def load_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in these YAML files."""
    crds = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


@contextlib.asynccontextmanager
async def run_emulator(
    workdir: Path | None = None,
    *,
    crds: Iterable[Path] = (CRD_PATH,),
    namespaces: Iterable[str] = ("default",),
    token: str = "test-token",
) -> AsyncIterator[Emulator]:
    """Start an emulator in its own thread; yield it; stop it on exit (bounded waits).

    `workdir` receives the kubeconfig (a temporary directory when None). The CRDs are created
    through the API as ``apiextensions.k8s.io/v1`` objects (so kopf can list them) and their
    resources served from then on; `namespaces` are created too.
    """
    thread = _ServerThread(load_crds(crds), list(namespaces))
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-emulator-"))
            )
        workdir.mkdir(parents=True, exist_ok=True)
        thread.start()
        try:
            started = await asyncio.to_thread(thread.ready.wait, START_TIMEOUT)
            if thread.error is not None or not started:
                raise RuntimeError(
                    f"the emulator did not start within {START_TIMEOUT}s"
                ) from thread.error
            kubeconfig = workdir / "kubeconfig"
            kubeconfig.write_text(json.dumps(_kubeconfig(thread.url, token), indent=2))
            client = KubeClient(thread.url, token=token)
            try:
                yield Emulator(
                    url=thread.url,
                    kubeconfig=kubeconfig,
                    token=token,
                    client=client,
                    mock=thread.handler,
                )
            finally:
                await client.close()
        finally:
            await asyncio.to_thread(thread.stop)
