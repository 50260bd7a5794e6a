"""The operator's own API credentials rotate under it (issue 14, item 7).

Covers: an elected operator whose login answers a new token after the emulator has revoked the
old one (as when a projected service-account token is rotated and the old one expires) keeps
going: kopf re-logs in, status writes and Lease renewals are made with the new token, a request
created after the rotation reaches Cached, and the operator never loses the Lease.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kopf

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    image_bytes,
    image_id,
    phase,
    request_body,
    start_operator,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import HttpFileServer

LEASE = {
    "leader_election": True,
    "lease_namespace": "default",
    "lease_duration": 4.0,
    "lease_renew_deadline": 3.0,
    "lease_retry_period": 0.5,
}


def _ok_writes(kube: Emulator, token: str, resource: str, subresource: str | None) -> int:
    return sum(
        1
        for w in kube.writes
        if w.token == token
        and w.resource == resource
        and w.subresource == subresource
        and w.code < 300
    )


async def test_writes_and_lease_renewals_go_on_after_a_token_rotation(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, token_file: Path
) -> None:
    tokens = ["rotating-1"]

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url, token=tokens[-1], default_namespace="default")

    first, second = image_id(150), image_id(151)
    for image in (first, second):
        upstream.add(image, image_bytes(image, 16 * 1024))
    agent = agents.start(2)
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    running = await start_operator(kube, token_file=token_file, login=login, **LEASE)
    try:
        await kube.client.create(
            ICR, request_body("before", first, pod="glance-0", port=agent.port)
        )
        await wait_for_status(kube, "before", phase("Cached"))
        tokens.append("rotating-2")
        kube.revoke_token("rotating-1")
        rotated_at = time.monotonic()
        await kube.client.create(
            ICR, request_body("after", second, pod="glance-0", port=agent.port)
        )
        await wait_for_status(kube, "after", phase("Cached"))
        await wait_until(
            lambda: _ok_writes(kube, "rotating-2", "leases", None) >= 3,
            within=15,
            what="Lease renewals with the new token",
        )
        assert running.thread.is_alive() and not running.errors, "the Lease was never lost"
    finally:
        await running.stop()
    assert _ok_writes(kube, "rotating-2", "imagecacherequests", "status") >= 1
    late_old = [
        w for w in kube.writes if w.token == "rotating-1" and w.at > rotated_at and w.code < 300
    ]
    assert late_old == [], "the revoked token wrote nothing"
