"""HTTP → store: what each Kubernetes API request does, and how it is answered.

`serve` takes a parsed kmock request and answers a kmock `Response` (JSON object, JSON-lines
watch stream, or a Table); refusals are raised as `errors.ApiError` and rendered by the
handler. Covered: discovery, OpenAPI stubs, create/get/list/watch/replace/patch/delete on every
served resource, the ``status`` subresource, both event APIs, and server-side printing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from kmock import Request, Response

from tests.kube import discovery, events, tables
from tests.kube.errors import ApiError, BadRequest, MethodNotAllowed, NotFound, UnsupportedMediaType
from tests.kube.patching import json_patch, merge_patch, strategic_merge_patch
from tests.kube.paths import ApiPath, parse_api_path
from tests.kube.resources import ResourceType
from tests.kube.selectors import field_matcher, label_matcher
from tests.kube.store import Store

_EVENTS_V1 = ("events.k8s.io", "v1", "events")
_JSON = {"Content-Type": "application/json"}


def _body(request: Request) -> Any:
    if not request.body:
        return None
    if request.data is not None:
        return request.data  # parsed once already, when the request was recorded
    try:
        return json.loads(request.body)
    except ValueError as e:
        raise BadRequest(f"the body of the request was in an unknown format: {e}") from e


def _openapi(path: str, store: Store) -> dict[str, Any]:
    """OpenAPI v3 documents just detailed enough for kubectl to leave validation to the server.

    Each group-version lists, per resource, a PATCH operation with the ``fieldValidation``
    query parameter: kubectl then skips client-side validation and sends the object as is.
    """
    gvs = sorted({(t.group, t.version) for t in store.types.values()})
    names = {gv: (f"apis/{gv[0]}/{gv[1]}" if gv[0] else f"api/{gv[1]}") for gv in gvs}
    if path == "/openapi/v3":
        return {
            "paths": {
                n: {"serverRelativeURL": f"/openapi/v3/{n}?hash={store.rv}"} for n in names.values()
            }
        }
    for gv, name in names.items():
        if path == f"/openapi/v3/{name}":
            paths = {}
            for rt in store.types.values():
                if (rt.group, rt.version) != gv:
                    continue
                gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
                patch = {
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
                prefix = f"/{name}/namespaces/{{namespace}}" if rt.namespaced else f"/{name}"
                paths[f"{prefix}/{rt.plural}/{{name}}"] = {"patch": patch}
            return {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.34.0"},
                "paths": paths,
                "components": {"schemas": {}},
            }
    raise NotFound("the server could not find the requested resource")


def _discovery(path: ApiPath, raw_path: str, store: Store) -> dict[str, Any]:
    types = list(store.types.values())
    stripped = raw_path.rstrip("/")
    if stripped == "/version":
        return discovery.version()
    if stripped == "/api":
        return discovery.core_versions()
    if stripped == "/apis":
        return discovery.group_list(types)
    if stripped == "" or stripped == "/healthz" or stripped == "/readyz" or stripped == "/livez":
        return {"paths": ["/api", "/api/v1", "/apis", "/version"]}
    if stripped.startswith("/openapi/"):
        return _openapi(stripped, store)
    doc: dict[str, Any] | None = None
    if path.group is not None and path.version is not None:
        doc = discovery.resource_list(types, path.group, path.version)
    elif path.group:
        doc = discovery.group(types, path.group)
    if doc is None:
        raise NotFound("the server could not find the requested resource")
    return doc


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(status=status, payload=payload, headers=_JSON)


class Router:
    """Serves every request against one `Store`; `closing` ends open watches promptly.

    `connections` maps the id of each request being served to its connection (the handler fills
    it): a watch ends when its client goes away, and `drop_watches` can cut them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.closing = False
        self.connections: dict[int, asyncio.BaseTransport] = {}
        self._watching: set[int] = set()

    @property
    def open_watches(self) -> int:
        """How many watch streams are being served right now."""
        return len(self._watching)

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch now; `abrupt` cuts the connection instead of ending the stream
        cleanly (as a crashing API server or a load balancer would). How many were open."""
        if not abrupt:
            return self.store.end_watches()
        cut = 0
        for request_id in list(self._watching):
            transport = self.connections.get(request_id)
            if transport is not None and not transport.is_closing():
                transport.abort()  # type: ignore[attr-defined]
                cut += 1
        return cut

    async def serve(self, request: Request) -> Response:
        raw_path = request.url.path
        path = parse_api_path(raw_path)
        if not path.is_resource:
            if request.method.value != "GET":
                raise MethodNotAllowed(
                    f"the server does not allow this method on the requested resource: {raw_path}"
                )
            return _ok(_discovery(path, raw_path, self.store))
        assert path.group is not None and path.version is not None and path.plural is not None
        is_events_v1 = (path.group, path.version, path.plural) == _EVENTS_V1
        rt = (
            self.store.find_type("", "v1", "events")
            if is_events_v1
            else self.store.find_type(path.group, path.version, path.plural)
        )
        if path.namespace is not None and not rt.namespaced:
            raise NotFound("the server could not find the requested resource")
        if path.subresource is not None and path.subresource not in rt.subresources:
            raise NotFound("the server could not find the requested resource")
        out: Callable[[dict[str, Any]], dict[str, Any]] = (
            events.from_core if is_events_v1 else (lambda o: o)
        )
        into: Callable[[Any], Any] = (
            (lambda b: events.to_core(b) if isinstance(b, dict) else b)
            if is_events_v1
            else (lambda b: b)
        )
        method = request.method.value
        params = request.params
        if method == "GET" and params.get("watch") in ("true", "1"):
            return self._watch(request, rt, path, out, is_events_v1)
        if method == "GET" and path.name is None:
            return self._list(request, rt, path, out, is_events_v1)
        if method == "GET":
            obj = self.store.get(rt, path.namespace, path.name or "")
            return self._answer(request, rt, [obj], out, single=True)
        if method == "POST" and path.name is None:
            return _ok(out(self.store.create(rt, path.namespace, into(_body(request)))), 201)
        if method == "PUT" and path.name is not None:
            body = into(_body(request))
            rv = (
                (body or {}).get("metadata", {}).get("resourceVersion")
                if isinstance(body, dict)
                else None
            )
            return _ok(
                out(
                    self.store.write(
                        rt,
                        path.namespace,
                        path.name,
                        body,
                        subresource=path.subresource,
                        rv_precondition=rv,
                    )
                )
            )
        if method == "PATCH" and path.name is not None:
            return _ok(out(self._patch(request, rt, path, into)))
        if method == "DELETE" and path.name is not None:
            options = _body(request) or {}
            return _ok(
                out(
                    self.store.delete(
                        rt, path.namespace, path.name, preconditions=options.get("preconditions")
                    )
                )
            )
        raise MethodNotAllowed(
            f"the server does not allow this method on the requested resource: {method} {raw_path}"
        )

    def _patch(
        self, request: Request, rt: ResourceType, path: ApiPath, into: Callable[[Any], Any]
    ) -> dict[str, Any]:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        patch = _body(request)
        current = self.store.get(rt, path.namespace, path.name or "")
        if content_type == "application/merge-patch+json":
            candidate = merge_patch(current, into(patch) if isinstance(patch, dict) else patch)
        elif content_type == "application/json-patch+json":
            candidate = json_patch(current, patch)
        elif content_type == "application/strategic-merge-patch+json" and not rt.custom:
            candidate = strategic_merge_patch(
                current, into(patch) if isinstance(patch, dict) else patch
            )
        else:
            raise UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json{'' if rt.custom else ', application/strategic-merge-patch+json'}"  # noqa: E501 (the API server's wording)
            )
        rv = patch.get("metadata", {}).get("resourceVersion") if isinstance(patch, dict) else None
        return self.store.write(
            rt,
            path.namespace,
            path.name or "",
            candidate,
            subresource=path.subresource,
            rv_precondition=rv,
        )

    def _selectors(self, request: Request, is_events_v1: bool) -> Callable[[dict[str, Any]], bool]:
        fields = request.params.get("fieldSelector")
        labels = label_matcher(request.params.get("labelSelector"))
        by_field = field_matcher(events.selector_to_core(fields) if is_events_v1 else fields)
        return lambda obj: labels(obj) and by_field(obj)

    def _answer(
        self,
        request: Request,
        rt: ResourceType,
        objs: list[dict[str, Any]],
        out: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        single: bool,
    ) -> Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            include = request.params.get("includeObject", "Metadata")
            return _ok(
                tables.to_table(
                    rt,
                    [out(o) for o in objs],
                    resource_version=str(self.store.rv),
                    include_object=include,
                )
            )
        if single:
            return _ok(out(objs[0]))
        list_kind = f"{rt.kind}List"
        api_version = "events.k8s.io/v1" if out is events.from_core else rt.api_version
        return _ok(
            {
                "kind": list_kind,
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [out(o) for o in objs],
            }
        )

    def _list(
        self,
        request: Request,
        rt: ResourceType,
        path: ApiPath,
        out: Callable[[dict[str, Any]], dict[str, Any]],
        is_events_v1: bool,
    ) -> Response:
        objs = self.store.list(rt, path.namespace, self._selectors(request, is_events_v1))
        return self._answer(request, rt, objs, out, single=False)

    def _watch(
        self,
        request: Request,
        rt: ResourceType,
        path: ApiPath,
        out: Callable[[dict[str, Any]], dict[str, Any]],
        is_events_v1: bool,
    ) -> Response:
        matches = self._selectors(request, is_events_v1)
        if path.name is not None:
            by_name = matches
            matches = lambda obj: obj["metadata"]["name"] == path.name and by_name(obj)  # noqa: E731
        timeout = (
            float(request.params["timeoutSeconds"]) if "timeoutSeconds" in request.params else None
        )
        transport = self.connections.get(request.id)

        def keep_going() -> bool:
            return not self.closing and (transport is None or not transport.is_closing())

        async def stream() -> AsyncIterator[Any]:
            self._watching.add(request.id)
            try:
                yield b""  # send the headers now: a watch may stay silent for a long time
                async for event in self.store.watch(
                    rt,
                    path.namespace,
                    matches,
                    since=request.params.get("resourceVersion"),
                    timeout_seconds=timeout,
                    keep_going=keep_going,
                ):
                    if event.type == "ERROR" or not is_events_v1:
                        yield event.encoded()  # the same bytes for every watcher
                    else:
                        yield {"type": event.type, "object": out(event.object)}
            finally:
                self._watching.discard(request.id)

        return Response(status=200, payload=stream(), headers=_JSON)


def render_error(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP code and Status body for any exception (unexpected ones are 500s)."""
    if isinstance(exc, ApiError):
        return exc.code, exc.status()
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"emulator error: {exc!r}",
        "reason": "InternalError",
        "code": 500,
    }
    return 500, body
