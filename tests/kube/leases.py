"""What the API server checks on a ``coordination.k8s.io/v1`` Lease, and how it answers.

Leases are served by the generic store (create/get/list/watch/update/patch/delete, 409 on a
stale ``resourceVersion``, 409 AlreadyExists); this module adds the Lease's own rules:

* decoding (400 BadRequest, before anything else): ``acquireTime`` and ``renewTime`` are
  MicroTime, parsed with Go's layout ``2006-01-02T15:04:05.000000Z07:00`` — exactly six fraction
  digits (``...:05Z`` or ``...:05.5Z`` are refused, as a client that writes ``isoformat()`` of a
  whole second finds out); ``leaseDurationSeconds`` and ``leaseTransitions`` must be integers;
  ``holderIdentity`` a string. Stored times are re-written in UTC, as the server does.
* an Event's ``eventTime`` is a MicroTime as well (`normalize_event`).
* validation (422 Invalid): ``leaseDurationSeconds`` > 0, ``leaseTransitions`` >= 0
  (``pkg/apis/coordination/validation``).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from tests.kube import schema as schemas
from tests.kube.errors import BadRequest
from tests.kube.resources import TypeKey

LEASE_KEY: TypeKey = ("coordination.k8s.io", "v1", "leases")
GO_MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_MICRO_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})(Z|[+-]\d{2}:\d{2})$"
)
_TIMES = ("acquireTime", "renewTime")
_INTEGERS = ("leaseDurationSeconds", "leaseTransitions")


def _undecodable(detail: str, kind: str = "Lease") -> BadRequest:
    return BadRequest(f'{kind} in version "v1" cannot be handled as a {kind}: {detail}')


def _micro_time(value: Any, kind: str = "Lease") -> str:
    """The MicroTime in UTC as the server writes it back, or the 400 it answers."""
    if not isinstance(value, str):
        name = type(value).__name__
        raise _undecodable(f"json: cannot unmarshal {name} into Go value of type string", kind)
    match = _MICRO_TIME.match(value)
    if match is None:
        raise _undecodable(f'parsing time "{value}" as "{GO_MICRO_LAYOUT}": cannot parse', kind)
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_event(obj: dict[str, Any]) -> dict[str, Any]:
    """An Event's ``eventTime`` is a MicroTime too (both event APIs store it as is)."""
    if obj.get("eventTime") is None:
        return obj
    return {**obj, "eventTime": _micro_time(obj["eventTime"], "Event")}


def normalize_and_validate(obj: dict[str, Any]) -> dict[str, Any]:
    """The Lease as stored (times in UTC), or raise the 400/422 the API server answers."""
    spec = obj.get("spec")
    if spec is None:
        return obj
    if not isinstance(spec, dict):
        raise _undecodable("json: cannot unmarshal into Go struct field Lease.spec")
    spec = dict(spec)
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        raise _undecodable(
            "json: cannot unmarshal into Go struct field holderIdentity of type string"
        )
    for name in _INTEGERS:
        value = spec.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _undecodable(f"json: cannot unmarshal into Go struct field {name} of type int32")
    for name in _TIMES:
        if spec.get(name) is not None:
            spec[name] = _micro_time(spec[name])
    errors = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errors.append(
            schemas.FieldError(
                "spec.leaseDurationSeconds",
                "FieldValueInvalid",
                f"Invalid value: {duration}: must be greater than 0",
            )
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        errors.append(
            schemas.FieldError(
                "spec.leaseTransitions",
                "FieldValueInvalid",
                f"Invalid value: {transitions}: must be greater than or equal to 0",
            )
        )
    if errors:
        name = str(obj.get("metadata", {}).get("name", ""))
        raise schemas.refusal("Lease", "coordination.k8s.io", name, errors)
    return {**obj, "spec": spec}
