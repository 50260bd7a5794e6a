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
import concurrent.futures
import contextlib
import json
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import kubernetes
import yaml

from tests.kube.client import KubeClient
from tests.kube.faults import ANY, WRITE_VERBS, Delay, Fault, Faults, WriteRecord, fault_status
from tests.kube.paths import ApiPath, parse_api_path
from tests.kube.resources import builtin_types
from tests.kube.routes import Router, render_error
from tests.kube.store import CRD_KEY, NS_KEY, Store
from tests.kube.tokens import TokenAuthority

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "imagecacherequests.yaml"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
T = TypeVar("T")


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
    """A kmock handler whose fallback is the strict store; user reactions still come first.

    Before either, a request without a bearer token, or with one `tokens` refuses (revoked, or
    a service-account token minted for another audience), is refused (401, as with anonymous
    auth off), injected `faults` delay matching requests and fail matching writes, and every
    write is logged in `writes` with the token that sent it and the code it got. TokenRequest
    and TokenReview are answered by `tokens` (see `tests.kube.tokens`).
    """

    router: Router = attrs.field(factory=lambda: Router(Store(builtin_types())))
    faults: Faults = attrs.field(factory=Faults)
    writes: list[WriteRecord] = attrs.field(factory=list)
    tokens: TokenAuthority = attrs.field(init=False)
    _resources: dict[tuple[str | None, str | None, str | None], kmock.resource] = attrs.field(
        factory=dict, init=False
    )

    def __attrs_post_init__(self) -> None:
        self.tokens = TokenAuthority(self._lookup)

    def _resource(self, path: ApiPath) -> kmock.resource:
        """kmock's (frozen) resource for a path's, built once per resource: building one runs
        a runtime Protocol check that cost more than the rest of recording a request."""
        key = (path.group, path.version, path.plural)
        found = self._resources.get(key)
        if found is None:
            found = self._resources[key] = kmock.resource(
                group=path.group, version=path.version, plural=path.plural
            )
        return found

    def _lookup(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.objects.get((("", "v1", plural), namespace, name))

    @property
    def store(self) -> Store:
        return self.router.store

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Parse the path ourselves: kmock 0.8's parser fails on /api/v1/namespaces[/x].
        body = await raw_request.read()
        path = parse_api_path(raw_request.path)
        params = dict(raw_request.query)
        resource = self._resource(path) if path.is_resource else None
        request = kmock.Request(
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
        auth = raw_request.headers.get("Authorization", "")
        scheme, _, credentials = auth.partition(" ")
        anonymous = scheme != "Bearer" or not credentials.strip()
        public = raw_request.path in _PUBLIC_PATHS or _is_kubectl(raw_request)
        if not public and (anonymous or not self.tokens.accepts_bearer(credentials.strip())):
            # An API server with anonymous auth off: a client that sends no token learns it here.
            return aiohttp.web.json_response(_UNAUTHORIZED, status=401)
        delay = self.faults.delay_for(raw_request.method, path.plural)
        if delay > 0:
            await asyncio.sleep(delay)
        verb = WRITE_VERBS.get(raw_request.method) if path.is_resource else None
        if verb is None:
            return await self._serve(request, raw_request)
        plural = path.plural or ""
        code = self.faults.take(verb, plural, path.subresource, credentials.strip())
        if code is not None:
            status = fault_status(code, verb=verb, resource=plural, name=path.name)
            response: aiohttp.web.StreamResponse = aiohttp.web.json_response(status, status=code)
        elif _is_token_call(raw_request.method, path):
            response = self._tokens(path, request.data)
        else:
            response = await self._serve(request, raw_request)
        self.writes.append(
            WriteRecord(
                verb=verb,
                resource=plural,
                namespace=path.namespace,
                name=path.name,
                subresource=path.subresource,
                token=credentials.strip(),
                user_agent=raw_request.headers.get("User-Agent", ""),
                code=response.status,
                body=request.data,
            )
        )
        return response

    def _tokens(self, path: ApiPath, body: Any) -> aiohttp.web.StreamResponse:
        """TokenRequest (``serviceaccounts/{name}/token``) or TokenReview, both 201."""
        try:
            if path.plural == "tokenreviews":
                answer = self.tokens.review(body)
            else:
                answer = self.tokens.request(path.namespace or "", path.name or "", body)
        except Exception as e:
            code, status = render_error(e)
            return aiohttp.web.json_response(status, status=code)
        return aiohttp.web.json_response(answer, status=201)

    async def _serve(
        self, request: kmock.Request, raw_request: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        if raw_request.transport is not None:
            self.router.connections[request.id] = raw_request.transport
        try:
            try:
                return await self._handle(request)  # the kmock DSL's reactions, if any
            except NotImplementedError:
                pass  # no reaction answered: the strict store does
            # Not a kmock fallback reaction: kmock finds out whether a reaction's view holds the
            # request by scanning every request served so far, which made each request cost
            # O(requests served); with no reactions, nothing is scanned.
            return await (await self.router.serve(request))(request)
        except Exception as e:
            # kmock wraps an error raised once a stream has started in an exception carrying the
            # started response: nothing more can be said on it (the error is printed).
            started = e.args[0] if e.args else None
            if isinstance(started, aiohttp.web.StreamResponse) and started.prepared:
                if e.__cause__ is not None:
                    traceback.print_exception(e.__cause__)
                return started
            code, status = render_error(e)
            if code >= 500:
                traceback.print_exc()
            return aiohttp.web.json_response(status, status=code)
        finally:
            self.router.connections.pop(request.id, None)


_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/readyz", "/livez"})
"""What an API server serves without credentials (``system:public-info-viewer``)."""
_UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


def _is_token_call(method: str, path: ApiPath) -> bool:
    if method != "POST":
        return False
    if (path.group, path.plural) == ("authentication.k8s.io", "tokenreviews"):
        return path.name is None and path.namespace is None
    return (path.group, path.plural, path.subresource) == ("", "serviceaccounts", "token")


def _is_kubectl(raw_request: aiohttp.web.BaseRequest) -> bool:
    """kubectl (client-go) sends no bearer token over plain http, which is all the emulator
    speaks; it is let in without one rather than every kubectl test needing TLS."""
    return raw_request.headers.get("User-Agent", "").startswith("kubectl/")


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

    def call(self, fn: Callable[[], T], within: float = 10.0) -> T:
        """Run `fn` on the emulator's loop (where the store lives); its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(within)

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
    workdir: Path
    """Where the kubeconfigs are written."""
    _thread: _ServerThread = field(repr=False)

    @property
    def requests(self) -> list[kmock.Request]:
        """Every request served so far, oldest first (``.method``, ``.url``, ``.params``)."""
        return list(self.mock)

    @property
    def writes(self) -> list[WriteRecord]:
        """Every write (create/update/patch/delete) so far, oldest first, with who sent it."""
        return list(self.mock.writes)

    @property
    def store(self) -> Store:
        """The emulator's state; read it only while nothing writes (it lives in another thread)."""
        return self.mock.store

    @property
    def server_thread(self) -> threading.Thread:
        """The thread serving the API (its CPU clock is the emulator's own cost)."""
        return self._thread

    def run_in_server(self, fn: Callable[[], T], within: float = 10.0) -> T:
        """Run `fn` on the emulator's event loop, in its thread (e.g. to read the store while
        it serves, or to start a profiler there); its result, waited for at most `within` s."""
        return self._thread.call(fn, within)

    @property
    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header of the kubeconfig's token, for raw HTTP requests."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point kubectl and kopf here."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    # -- identities and clients ----------------------------------------------------------------

    def kubeconfig_for(self, token: str) -> Path:
        """A kubeconfig of its own whose bearer token is `token` (so `writes` tell who wrote)."""
        path = self.workdir / f"kubeconfig-{token}"
        path.write_text(json.dumps(_kubeconfig(self.url, token), indent=2))
        return path

    def official_client(self, token: str | None = None) -> kubernetes.client.ApiClient:
        """A client of the official ``kubernetes`` package, loaded from a kubeconfig of this
        emulator (`token` picks its own identity). Close it (``with ... as api:``)."""
        config = self.kubeconfig if token is None else self.kubeconfig_for(token)
        return kubernetes.config.new_client_from_config(config_file=str(config))

    # -- faults --------------------------------------------------------------------------------

    def fail_writes(
        self,
        code: int,
        *,
        verb: str | None = None,
        resource: str | None = None,
        subresource: str | None = ANY,
        token: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """Fail matching writes with `code` (and the real server's Status body for it).

        `verb` is ``create``/``update``/``patch``/``delete``, `resource` a plural, `subresource`
        e.g. ``"status"`` or None for the main resource (default: any), `token` one client's
        writes only (see `kubeconfig_for`); None matches anything.
        The next `times` matching writes fail, or all of them for `seconds`, or until
        ``.clear()`` (or `clear_faults`) when neither is given.
        """
        until = None if seconds is None else time.monotonic() + seconds
        fault = Fault(code, verb, resource, subresource, token, times=times, until=until)
        return self.mock.faults.add(fault)

    def clear_faults(self) -> None:
        """Stop failing writes and delaying requests."""
        self.mock.faults.clear()

    def delay(
        self, seconds: float, *, resource: str | None = None, methods: Iterable[str] | None = None
    ) -> Delay:
        """Answer requests for `resource` (a plural; None: all) `seconds` late, until
        ``.clear()`` (or `clear_faults`); `methods` limits it (e.g. ``{"GET", "PUT"}``)."""
        chosen = None if methods is None else frozenset(m.upper() for m in methods)
        return self.mock.faults.add_delay(Delay(seconds, resource, chosen))

    def revoke_token(self, token: str) -> None:
        """Refuse `token` (401) from now on: a rotated credential whose old value is dead."""
        self.mock.tokens.revoke(token)

    @property
    def open_watches(self) -> int:
        """How many watch streams the emulator is serving right now."""
        return self._thread.call(lambda: self.mock.router.open_watches)

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch stream now (clients must re-watch); how many were open.

        A clean end is what a client sees when the server closes a watch; `abrupt` cuts the
        connections mid-stream instead.
        """
        return self._thread.call(lambda: self.mock.router.drop_watches(abrupt=abrupt))

    def watch_gap(self, *, deleting: Iterable[tuple[str, str | None, str]] = ()) -> int:
        """A watch gap that ends in ``410 Gone``: every watch ends, the objects in `deleting`
        (``(plural, namespace, name)``) are deleted while no watch is open, and the history is
        compacted, so a client re-watching from its last resourceVersion gets 410 and must list
        again; the deletions appear in no watch. How many watches were open.
        """
        wanted = list(deleting)
        return self._thread.call(lambda: _gap(self.mock.store, wanted))


def _gap(store: Store, deleting: list[tuple[str, str | None, str]]) -> int:
    """End every watch, delete objects no watch will report, compact the history."""
    open_watches = store.end_watches()  # each stream ends before the deletions below reach it
    for plural, namespace, name in deleting:
        rt = next(t for t in store.types.values() if t.plural == plural)
        store.delete(rt, namespace, name)
    store.compact()
    return open_watches


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
                    workdir=workdir,
                    _thread=thread,
                )
            finally:
                await client.close()
        finally:
            await asyncio.to_thread(thread.stop)
