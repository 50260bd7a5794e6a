"""A blocking, byte-exact HTTP client for driving a real agent process from tests.

`http.client` sends the request target exactly as given (no dot-segment removal, no
re-encoding), which the bad-input tests need, and being blocking it suits tests that also
`kill -9` processes. `AgentClient` adds the few agent calls the fault tests repeat, and
`wait_until` polls a condition with a bounded deadline (never a bare sleep).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """One HTTP response, fully read."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def request(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one request with `target` verbatim and read the whole response."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        sent = {k.lower() for k in (headers or {})}
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None and "content-length" not in sent:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return Reply(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=data,
        )
    finally:
        connection.close()


class AgentClient:
    """The agent's API as the tests use it, with an optional token."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token

    def call(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        all_headers = {"X-Auth-Token": self.token} if self.token else {}
        all_headers.update(headers or {})
        return request(
            self.host, self.port, method, target, headers=all_headers, body=body, timeout=timeout
        )

    def queue(self, image_id: str) -> Reply:
        return self.call("PUT", f"/v2/cache/{image_id}", headers={"Content-Length": "0"})

    def listing(self) -> dict[str, Any]:
        reply = self.call("GET", "/v2/cache")
        assert reply.status == 200, reply
        doc: dict[str, Any] = reply.json()
        return doc

    def cached_ids(self) -> list[str]:
        return [entry["image_id"] for entry in self.listing()["cached_images"]]

    def state(self, image_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/v2/cache/{image_id}")
        assert reply.status == 200, reply
        doc: dict[str, Any] = reply.json()
        return doc

    def wait_for_state(
        self, image_id: str, states: set[str], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll `GET /v2/cache/{id}` until its state is one of `states`; return that report."""
        return wait_until(
            lambda: doc if (doc := self.state(image_id))["state"] in states else None,
            timeout=timeout,
            what=f"{image_id} to reach {sorted(states)}",
        )


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.01
) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
