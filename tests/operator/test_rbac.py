"""The operator's API footprint matches the least-privilege RBAC of SPEC §4.3.

Covers: every request the operator (kopf's user agent and its own client's, ``imagecache-
operator``) sends to the API server during a lifecycle with evictOnDelete maps to one of the
verbs/resources the chart grants: get/list/watch pods; list/watch/patch imagecacherequests; patch
imagecacherequests/status; create events. (The per-pod TokenRequests, on the operator's own
service account only, are checked in test_agent_credentials.py.)
"""

from __future__ import annotations

from tests.kube.emulator import Emulator
from tests.operator.harness import (
    ICR,
    AgentPool,
    RunningOperator,
    image_bytes,
    image_id,
    phase,
    request_body,
    wait_for_status,
    wait_until,
)
from tests.support.upstreams import HttpFileServer

ALLOWED = {
    ("pods", "", "list"),
    ("pods", "", "watch"),
    ("pods", "", "get"),
    ("imagecacherequests", "", "list"),
    ("imagecacherequests", "", "watch"),
    ("imagecacherequests", "", "get"),
    ("imagecacherequests", "", "patch"),
    ("imagecacherequests", "status", "patch"),
    ("events", "", "create"),
    ("events", "", "patch"),
}


def _verb(method: str, params: dict[str, str], named: bool) -> str:
    if method == "GET":
        return "watch" if params.get("watch") in ("true", "1") else ("get" if named else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


async def test_operator_uses_only_the_granted_verbs(
    kube: Emulator, upstream: HttpFileServer, agents: AgentPool, operator: RunningOperator
) -> None:
    image = image_id(95)
    upstream.add(image, image_bytes("rbac", 16 * 1024))
    agent = agents.start(2)
    await kube.client.create_pod("default", "glance-0", ip=agent.host)
    body = request_body("req", image, pod="glance-0", port=agent.port, evictOnDelete=True)
    await kube.client.create(ICR, body)
    await wait_for_status(kube, "req", phase("Cached"))
    await kube.client.delete(ICR, "req", namespace="default")

    async def gone() -> bool:
        return await kube.client.get(ICR, "req", namespace="default") is None

    await wait_until(gone, within=20, what="object deleted")
    used = set()
    for request in kube.requests:
        if not request.headers.get("User-Agent", "").startswith(("kopf/", "imagecache-operator")):
            continue
        path = request.url.path
        if path.startswith(("/api", "/apis")) and request.resource is None:
            continue  # discovery documents: allowed to every authenticated user
        resource = str(request.resource.plural if request.resource else path)
        used.add(
            (
                resource,
                request.subresource or "",
                _verb(request.method, dict(request.params), bool(request.name)),
            )
        )
    assert used, "no operator request recorded"
    assert used <= ALLOWED, sorted(used - ALLOWED)
