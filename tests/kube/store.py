"""The emulator's state: objects, resourceVersions, finalizers, and the history watches replay.

Every operation is synchronous and runs on the emulator's event loop, so each is atomic without
locks. Stored objects are never mutated in place (every write stores a new dict), so watch
events and answers can share them. What the real API server does and this store does too:
``uid``, a cluster-wide monotonic ``resourceVersion`` bumped on every write (not on no-op
writes), ``generation`` bumped only by changes outside ``metadata``/``status``,
``creationTimestamp``, the status subresource separated from the main resource, 409 on a stale
``resourceVersion``, namespaces that must exist, finalizers holding a ``deletionTimestamp``'d
object until they are all removed, and label/field selectors on list and watch.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.kube import leases
from tests.kube import schema as schemas
from tests.kube.errors import AlreadyExists, BadRequest, Conflict, Invalid, NotFound
from tests.kube.jsondata import copy_json
from tests.kube.resources import ResourceType, TypeKey, types_from_crd
from tests.kube.selectors import Matcher

Obj = dict[str, Any]
ObjKey = tuple[TypeKey, str | None, str]
HISTORY_LIMIT = 200_000
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CRD_KEY: TypeKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NS_KEY: TypeKey = ("", "v1", "namespaces")
EVENT_KEY: TypeKey = ("", "v1", "events")


def now_rfc3339() -> str:
    """The current UTC time, to the second, as the API server writes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Change:
    """One write, as watches see it: the object before (None: created) and after (None: gone)."""

    rv: int
    type_key: TypeKey
    old: Obj | None
    new: Obj | None
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    """This change's watch event of each type (ADDED, MODIFIED, DELETED) as sent: every
    watcher that sees it gets the same event, so it is encoded once for all of them."""


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream; `change` is None for the 410 ``ERROR`` (and a backlog)."""

    type: str
    object: Obj
    change: Change | None = None

    def encoded(self) -> bytes:
        """The JSON line sent for this event, encoded once per change and event type."""
        if self.change is None:
            return _line(self.type, self.object)
        line = self.change.encoded.get(self.type)
        if line is None:
            line = self.change.encoded[self.type] = _line(self.type, self.object)
        return line


def _line(type_: str, obj: Obj) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode() + b"\n"


@dataclass
class _Watcher:
    type_key: TypeKey
    namespace: str | None
    matches: Matcher
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    """Changes to send; None ends the stream (`Store.end_watches`)."""


def _own_meta(meta: Any) -> Obj:
    """A body's ``metadata`` as a dict of its own (one level), to be filled in."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BadRequest(
            "the body of the request was in an unknown format: metadata must be an object"
        )
    return dict(meta)


def _spec_part(obj: Obj, *, with_status: bool) -> Obj:
    """What ``generation`` tracks: everything but metadata (and status, if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if with_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


class Store:
    """Objects by (type, namespace, name), with a change history for watches."""

    def __init__(self, types: list[ResourceType]) -> None:
        self.types: dict[TypeKey, ResourceType] = {t.key: t for t in types}
        self.objects: dict[ObjKey, Obj] = {}
        self.rv = 0
        self.history: list[Change] = []
        self.compacted_rv = 0
        """History before this resourceVersion is gone: watching from earlier gets 410 Gone."""
        self._watchers: list[_Watcher] = []

    # -- lookups -------------------------------------------------------------------------------

    def find_type(self, group: str, version: str, plural: str) -> ResourceType:
        """The served type, or 404 as the API server answers for an unknown resource."""
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise NotFound("the server could not find the requested resource")
        return rt

    def _not_found(self, rt: ResourceType, name: str) -> NotFound:
        details = {"name": name, "group": rt.group, "kind": rt.plural}
        return NotFound(f'{rt.qualified} "{name}" not found', details=details)

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.objects.get((rt.key, namespace if rt.namespaced else None, name))
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None, matches: Matcher) -> list[Obj]:
        items = [
            obj
            for (key, ns, _), obj in self.objects.items()
            if key == rt.key and (namespace is None or ns == namespace) and matches(obj)
        ]
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    # -- writes --------------------------------------------------------------------------------

    def _record(self, rt: ResourceType, old: Obj | None, new: Obj | None) -> None:
        change = Change(self.rv, rt.key, old, new)
        self.history.append(change)
        if len(self.history) > HISTORY_LIMIT:
            del self.history[: len(self.history) // 2]
        for watcher in self._watchers:
            if watcher.type_key == rt.key:
                watcher.queue.put_nowait(change)

    def _bump(self, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """The object as stored, validated: a fresh copy, sharing nothing with `obj` (whose
        parts may be the client's body or another stored object) -- the one full copy a write
        makes."""
        name = obj["metadata"].get("name", "")
        if rt.validator is None:
            obj = copy_json(obj)
        else:
            obj = rt.validator.normalize(obj)
            errors = rt.validator.validate(obj, old if old is not None else schemas._MISSING)
            if errors:
                raise schemas.refusal(rt.kind, rt.group, name, errors)
        if rt.key == leases.LEASE_KEY:
            obj = leases.normalize_and_validate(obj)
        if rt.key == EVENT_KEY:
            obj = leases.normalize_event(obj)
        return obj

    def _generate_name(self, rt: ResourceType, meta: Obj) -> str:
        """A free name from ``generateName`` plus 5 random characters, as the API server does
        (it retries a taken suffix rather than answering 409 to the client)."""
        while True:
            name = str(meta["generateName"]) + uuid.uuid4().hex[:5]
            if (rt.key, meta.get("namespace"), name) not in self.objects:
                return name

    def create(self, rt: ResourceType, namespace: str | None, body: Any) -> Obj:
        """POST: a new object, namespace from the URL, ``status`` dropped if a subresource."""
        if not isinstance(body, dict):
            raise BadRequest("the body of the request was in an unknown format")
        obj = dict(body)  # one level: `_validate` copies the whole object once, at the end
        meta = obj["metadata"] = _own_meta(obj.get("metadata"))
        if rt.namespaced:
            if namespace is None:
                raise NotFound("the server could not find the requested resource")
            if meta.get("namespace", namespace) != namespace:
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"  # noqa: E501 (the API server's wording)
                )
            if (NS_KEY, None, namespace) not in self.objects:
                raise NotFound(
                    f'namespaces "{namespace}" not found',
                    details={"name": namespace, "kind": "namespaces"},
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if (
            obj.setdefault("apiVersion", rt.api_version) != rt.api_version
            or obj.setdefault("kind", rt.kind) != rt.kind
        ):
            raise BadRequest(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version ({rt.api_version})"  # noqa: E501 (the API server's wording)
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(rt, meta)
        name = meta.get("name") or ""
        if not name:
            raise schemas.refusal(
                rt.kind,
                rt.group,
                "",
                [
                    schemas.FieldError(
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        if len(name) > 253 or not _NAME_RE.match(name):
            detail = (
                f"Invalid value: {schemas._go(name)}: a lowercase RFC 1123 subdomain must consist of lower case "  # noqa: E501 (the API server's wording)
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"  # noqa: E501 (the API server's wording)
            )
            raise schemas.refusal(
                rt.kind,
                rt.group,
                name,
                [schemas.FieldError("metadata.name", "FieldValueInvalid", detail)],
            )
        key: ObjKey = (rt.key, meta.get("namespace"), name)
        if key in self.objects:
            raise AlreadyExists(
                f'{rt.qualified} "{name}" already exists',
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        for system in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
        ):
            meta.pop(system, None)
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now_rfc3339())
        if rt.has_status:
            obj.pop("status", None)
        if rt.kind == "Pod":
            obj["status"] = {"phase": "Pending"}
        if rt.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        obj = self._validate(rt, obj, None)
        self.objects[key] = self._bump(obj)
        if rt.key == CRD_KEY:
            self._serve_crd(None, obj)
        self._record(rt, None, obj)
        return obj

    def _serve_crd(self, old: Obj | None, new: Obj | None) -> None:
        """Serve what a created, changed or deleted CRD now defines: each version its own new
        `ResourceType` (so validation follows the changed schema from the next write on), the
        versions no longer served unserved. A deleted CRD takes its objects with it (the API
        server deletes them before the CRD goes), each a DELETED change for watches."""
        served = types_from_crd(new) if new is not None else []
        for rt in types_from_crd(old) if old is not None else []:
            if rt.key in {t.key for t in served}:
                continue
            self.types.pop(rt.key, None)
            if new is None:
                for key in [k for k in self.objects if k[0] == rt.key]:
                    stored = self.objects.pop(key)
                    self.rv += 1
                    self._record(rt, stored, None)
        for rt in served:
            self.types[rt.key] = rt

    def write(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        candidate: Any,
        *,
        subresource: str | None,
        rv_precondition: str | None,
    ) -> Obj:
        """PUT or the result of a PATCH: `candidate` is the whole object the client wants."""
        old = self.get(rt, namespace, name)
        if not isinstance(candidate, dict):
            raise BadRequest("the body of the request was in an unknown format")
        if rv_precondition and rv_precondition != old["metadata"]["resourceVersion"]:
            raise Conflict(
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '  # noqa: E501 (the API server's wording)
                "please apply your changes to the latest version and try again",
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        cmeta = candidate.get("metadata") or {}
        if cmeta.get("name", name) != name:
            raise BadRequest(
                f"the name of the object ({cmeta.get('name')}) does not match the name on the URL ({name})"  # noqa: E501 (the API server's wording)
            )
        if rt.namespaced and cmeta.get("namespace", namespace) != namespace:
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"  # noqa: E501 (the API server's wording)
            )
        # `new` shares parts with `old` and `candidate` until `_validate` copies it whole; only
        # its top level and its metadata's top level are changed before that.
        if subresource == "status":
            new = {key: value for key, value in old.items() if key != "status"}
            new["metadata"] = dict(old["metadata"])
            if "status" in candidate:
                new["status"] = candidate["status"]
        elif subresource is None:
            new = dict(candidate)
            new.setdefault("apiVersion", rt.api_version)
            new.setdefault("kind", rt.kind)
            new["metadata"] = meta = _own_meta(cmeta)
            for system in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ):
                if system in old["metadata"]:
                    meta[system] = old["metadata"][system]
                else:
                    meta.pop(system, None)
            if rt.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        else:
            raise NotFound("the server could not find the requested resource")
        meta = new["metadata"]
        if old["metadata"].get("deletionTimestamp"):
            added = [
                f
                for f in meta.get("finalizers", [])
                if f not in old["metadata"].get("finalizers", [])
            ]
            if added:
                quoted = ", ".join(f'"{f}"' for f in added)
                raise Invalid(
                    f'{rt.kind}{"." + rt.group if rt.group else ""} "{name}" is invalid: metadata.finalizers: Forbidden: '  # noqa: E501 (the API server's wording)
                    f"no new finalizers can be added if the object is being deleted, found new finalizers []string{{{quoted}}}"  # noqa: E501 (the API server's wording)
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._validate(rt, new, old)
        meta = new["metadata"]
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if _spec_part(new, with_status=rt.has_status) != _spec_part(old, with_status=rt.has_status):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        key: ObjKey = (rt.key, namespace if rt.namespaced else None, name)
        self._bump(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
            if rt.key == CRD_KEY:
                self._serve_crd(old, None)
            self._record(rt, old, None)
            return new
        self.objects[key] = new
        if rt.key == CRD_KEY:
            self._serve_crd(old, new)
        self._record(rt, old, new)
        return new

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        preconditions: dict[str, Any] | None = None,
    ) -> Obj:
        """DELETE: gone at once, or marked with ``deletionTimestamp`` while finalizers remain."""
        old = self.get(rt, namespace, name)
        preconditions = preconditions or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted and wanted != old["metadata"].get(field_name):
                raise Conflict(
                    f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition failed: '  # noqa: E501 (the API server's wording)
                    f"{field_name} in precondition: {wanted}, {field_name} in object meta: {old['metadata'].get(field_name)}"  # noqa: E501 (the API server's wording)
                )
        key: ObjKey = (rt.key, namespace if rt.namespaced else None, name)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = {**old, "metadata": dict(old["metadata"])}  # stored objects are never changed
            new["metadata"].update(
                deletionTimestamp=now_rfc3339(),
                deletionGracePeriodSeconds=0,
                generation=int(old["metadata"].get("generation", 1)) + 1,
            )
            self.objects[key] = self._bump(new)
            self._record(rt, old, new)
            return new
        gone = self._bump({**old, "metadata": dict(old["metadata"])})
        del self.objects[key]
        if rt.key == CRD_KEY:
            self._serve_crd(old, None)
        self._record(rt, old, None)
        return gone

    # -- watching ------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the change history, as etcd's compaction does: a watch from any earlier
        resourceVersion gets ``410 Gone`` and its client must list again."""
        self.history.clear()
        self.compacted_rv = self.rv

    def end_watches(self) -> int:
        """End every open watch stream now (clients must re-list or re-watch); how many."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        return len(self._watchers)

    def _oldest(self) -> int:
        return self.history[0].rv if self.history else self.compacted_rv

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        matches: Matcher,
        *,
        since: str | None,
        timeout_seconds: float | None,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> AsyncIterator[WatchEvent]:
        """Watch events (ADDED/MODIFIED/DELETED) after `since`, or current objects first.

        An object that starts or stops matching the selectors appears as ADDED or DELETED, as
        on the real API server. Each change is sent at most once; the stream ends after
        `timeout_seconds` seconds (the ``timeoutSeconds`` parameter).
        """
        watcher = _Watcher(rt.key, namespace if rt.namespaced else None, matches)
        backlog: list[Change]
        if since in (None, "", "0"):
            backlog = [
                Change(self.rv, rt.key, None, obj)
                for obj in self.list(rt, watcher.namespace, matches)
            ]
        else:
            start = int(since)  # type: ignore[arg-type]
            expired = self.history and self.history[0].rv > start + 1 and start < self.rv
            if expired or start < self.compacted_rv:
                yield WatchEvent(
                    "ERROR",
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "code": 410,
                        "reason": "Expired",
                        "message": f"too old resource version: {start} ({self._oldest()})",
                    },
                )
                return
            backlog = [c for c in self.history if c.rv > start and c.type_key == rt.key]
        self._watchers.append(watcher)
        try:
            for past in backlog:
                event = _event(past, watcher)
                if event is not None:
                    yield event
            loop = asyncio.get_running_loop()
            deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
            while keep_going():
                remaining = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if remaining <= 0:
                    return
                change: Change | None
                try:
                    # What is queued already is taken without a timer task per event.
                    change = watcher.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        change = await asyncio.wait_for(watcher.queue.get(), remaining)
                    except TimeoutError:
                        continue
                if change is None:
                    return
                event = _event(change, watcher)
                if event is not None:
                    yield event
        finally:
            self._watchers.remove(watcher)


def _event(change: Change, watcher: _Watcher) -> WatchEvent | None:
    def visible(obj: Obj | None) -> bool:
        if obj is None:
            return False
        in_ns = watcher.namespace is None or obj["metadata"].get("namespace") == watcher.namespace
        return in_ns and watcher.matches(obj)

    old, new = change.old, change.new
    was, now = visible(old), visible(new)
    if new is not None and now:
        return WatchEvent("MODIFIED" if was else "ADDED", new, change)
    if old is not None and was:
        gone = (
            new
            if new is not None
            else {**old, "metadata": {**old["metadata"], "resourceVersion": str(change.rv)}}
        )
        return WatchEvent("DELETED", gone, change)
    return None
