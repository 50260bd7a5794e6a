"""Injected write failures and the log of every write, for tests that break the API on purpose.

A `Fault` fails the writes that match it (verb, resource, subresource, token; None = any) with an
HTTP code and the Status body the real API server would send for that code: the next `times`
matching writes, or every matching write for `seconds`, or until cleared. `WriteRecord` is one
write as the emulator answered it, with who sent it (the bearer token, and the User-Agent), so a
test can assert that exactly one operator wrote. A `Delay` answers every matching request (reads
too: a slow API server, e.g. Lease calls answered after 3 s) only after `seconds`.

Faults are added from the test's thread and consumed on the emulator's: `Faults` holds a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
"""HTTP method -> Kubernetes verb, for the methods that write."""

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""Matches any subresource, including none (the default of `Fault.subresource`)."""


@dataclass(frozen=True)
class WriteRecord:
    """One write request and the code it was answered with."""

    verb: str
    """``create``, ``update``, ``patch`` or ``delete``."""
    resource: str
    """The plural, e.g. ``imagecacherequests``, ``leases``, ``events``."""
    namespace: str | None
    name: str | None
    subresource: str | None
    token: str
    """The bearer token sent (empty without one): who wrote."""
    user_agent: str
    code: int
    body: Any
    """The decoded JSON body sent (None if not JSON)."""
    at: float = field(default_factory=time.monotonic)
    """When it was answered (``time.monotonic()``, the same clock as the test's)."""


@dataclass
class Fault:
    """Fail matching writes with `code`; `times` and `until` bound it, `clear()` ends it."""

    code: int
    verb: str | None = None
    resource: str | None = None
    subresource: str | None = ANY
    token: str | None = None
    """Only writes sent with this bearer token (None: anyone's)."""
    times: int | None = None
    """How many more matching writes fail (None: no count limit)."""
    until: float | None = None
    """Monotonic time after which it no longer applies (None: no time limit)."""
    hits: int = 0
    """How many writes it failed so far."""
    cleared: bool = False

    def clear(self) -> None:
        self.cleared = True

    def active(self, now: float) -> bool:
        return (
            not self.cleared
            and (self.times is None or self.times > 0)
            and (self.until is None or now < self.until)
        )

    def matches(self, verb: str, resource: str, subresource: str | None, token: str) -> bool:
        return (
            (self.token is None or self.token == token)
            and (self.verb is None or self.verb == verb)
            and (self.resource is None or self.resource == resource)
            and (self.subresource is ANY or self.subresource == subresource)
        )


@dataclass
class Delay:
    """Answer matching requests (any method; None = any resource) `seconds` late."""

    seconds: float
    resource: str | None = None
    methods: frozenset[str] | None = None
    """HTTP methods delayed (None: all)."""
    cleared: bool = False
    delayed: int = 0
    """How many requests it delayed so far."""

    def clear(self) -> None:
        self.cleared = True

    def matches(self, method: str, resource: str | None) -> bool:
        return (
            not self.cleared
            and (self.resource is None or self.resource == resource)
            and (self.methods is None or method in self.methods)
        )


@dataclass
class Faults:
    """The faults in force, consulted for every write (and the delays, for every request)."""

    _faults: list[Fault] = field(default_factory=list)
    _delays: list[Delay] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_delay(self, delay: Delay) -> Delay:
        with self._lock:
            self._delays.append(delay)
        return delay

    def delay_for(self, method: str, resource: str | None) -> float:
        """How long to hold this request before serving it (0: not at all)."""
        with self._lock:
            self._delays = [d for d in self._delays if not d.cleared]
            longest = 0.0
            for delay in self._delays:
                if delay.matches(method, resource):
                    delay.delayed += 1
                    longest = max(longest, delay.seconds)
            return longest

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            for fault in self._faults:
                fault.cleared = True
            for delay in self._delays:
                delay.cleared = True
            self._faults.clear()
            self._delays.clear()

    def take(self, verb: str, resource: str, subresource: str | None, token: str) -> int | None:
        """The code to fail this write with (counting it against its fault), or None."""
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            for fault in self._faults:
                if fault.matches(verb, resource, subresource, token):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault.code
        return None


def fault_status(code: int, *, verb: str, resource: str, name: str | None) -> dict[str, Any]:
    """The Status body the real API server sends with this code."""
    reason = _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    what = f'{resource} "{name}"' if name else resource
    messages = {
        "Conflict": f"Operation cannot be fulfilled on {what}: the object has been modified; "
        "please apply your changes to the latest version and try again",
        "Invalid": f"{what} is invalid: injected fault",
        "TooManyRequests": "the server has received too many requests and has asked us to try "
        "again later",
        "ServiceUnavailable": "the server is currently unable to handle the request",
        "Timeout": f"the server was unable to return a response in the time allotted ({verb})",
    }
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": messages.get(reason, f"injected {code} on {verb} {what}"),
        "reason": reason,
        "code": code,
    }
    if name:
        body["details"] = {"name": name, "kind": resource}
    return body
