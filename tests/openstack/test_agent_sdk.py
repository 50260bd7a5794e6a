"""openstacksdk's image-cache calls, and raw requests, against one agent and a real Glance 33
side by side (SPEC §2.4, §2.8): every answer is compared, status code and body shape.

The agent: upstream ``glance://``, the `appcred` credentials, Keystone-mode inbound auth. Both
targets are reached through the same ``admin`` password cloud, ``image_endpoint_override``
pointing at each.

Covers: ``clear_cache``, ``queue_image``, ``get_image_cache``, ``cached_image_nodes`` (empty,
then the node's own URL, 404 for an unknown image), ``prune_cache``, ``clean_cache``,
``cache_delete_image``; image documents and listings (``name``, ``id``, ``status``, ``limit``,
``marker``, ``next``) byte-for-byte as Glance's; the error statuses and shapes (unknown image,
bad limit, unknown marker, 405 with ``Allow`` on the cache paths).
Run with ``-s`` to see each call and its answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openstack import connection
from openstack import exceptions as sdk_exceptions

from tests.openstack.agent_cloud import Transcript, client_clouds, running_agent, sdk
from tests.openstack.cloud import OpenStackCloud
from tests.support.agents import AgentProcess

TARGETS = ("agent", "glance")

# openstacksdk announces its own future API changes (InfluxDB support, a `service_type`
# argument it passes itself) as PendingDeprecationWarning on every connection.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytest.fixture(scope="module")
def agent(
    openstack_cloud: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    with running_agent(openstack_cloud, tmp_path_factory.mktemp("sdk-agent")) as process:
        yield process


@pytest.fixture(scope="module")
def connections(
    openstack_cloud: OpenStackCloud, agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, connection.Connection]:
    clouds = client_clouds(
        openstack_cloud,
        tmp_path_factory.mktemp("sdk-clients") / "clouds.yaml",
        {"agent": agent.url, "glance": openstack_cloud.glance_url},
    )
    return {target: sdk(clouds, target) for target in TARGETS}


def node_url(target: str, agent: AgentProcess, cloud: OpenStackCloud) -> str:
    return agent.url if target == "agent" else cloud.glance_url


def both(
    connections: dict[str, connection.Connection],
    transcript: Transcript,
    label: str,
    call: Callable[[connection.Connection], Any],
) -> dict[str, Any]:
    """Run `call` on both targets; each answer (or the exception's class) recorded."""
    answers: dict[str, Any] = {}
    for target in TARGETS:
        try:
            answers[target] = call(connections[target])
        except sdk_exceptions.SDKException as error:
            answers[target] = error
        transcript.record(f"[{target}] {label}", _describe(answers[target]))
    return answers


def _describe(answer: Any) -> str:
    if isinstance(answer, sdk_exceptions.HttpException):
        return f"{type(answer).__name__} {answer.status_code}"
    if isinstance(answer, Exception):
        return type(answer).__name__
    return repr(answer)


def cached_ids(conn: connection.Connection) -> list[str]:
    return [entry.image_id for entry in conn.image.get_image_cache().cached_images]


def wait_cached(conn: connection.Connection, image_id: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while image_id not in cached_ids(conn):
        assert time.monotonic() < deadline, f"{image_id} not cached within {within}s"
        time.sleep(0.2)


def test_sdk_cache_calls_answer_as_glance_does(
    openstack_cloud: OpenStackCloud,
    agent: AgentProcess,
    connections: dict[str, connection.Connection],
) -> None:
    log = Transcript()
    image = openstack_cloud.image("imagecache-test-small")
    unknown = str(uuid.uuid4())

    cleared = both(connections, log, "clear_cache()", lambda c: c.image.clear_cache())
    assert cleared == {"agent": None, "glance": None}
    listing = both(connections, log, "get_image_cache()", lambda c: c.image.get_image_cache())
    for cache in listing.values():
        assert (cache.cached_images, cache.queued_images) == ([], [])

    nodes = both(
        connections, log, "cached_image_nodes(id)", lambda c: c.image.cached_image_nodes(image.id)
    )
    assert nodes == {"agent": [], "glance": []}

    queued = both(connections, log, "queue_image(id)", lambda c: c.image.queue_image(image.id))
    assert queued == {"agent": None, "glance": None}
    for conn in connections.values():
        wait_cached(conn, image.id)
    listing = both(connections, log, "get_image_cache()", lambda c: c.image.get_image_cache())
    for cache in listing.values():
        (entry,) = cache.cached_images
        assert entry.image_id == image.id and entry.size == image.size
        assert isinstance(entry.last_accessed, float) and isinstance(entry.hits, int)

    nodes = both(
        connections, log, "cached_image_nodes(id)", lambda c: c.image.cached_image_nodes(image.id)
    )
    for target in TARGETS:
        assert nodes[target] == [node_url(target, agent, openstack_cloud)]

    missing = both(
        connections,
        log,
        "cached_image_nodes(unknown)",
        lambda c: c.image.cached_image_nodes(unknown),
    )
    assert all(isinstance(a, sdk_exceptions.NotFoundException) for a in missing.values())

    pruned = both(connections, log, "prune_cache()", lambda c: c.image.prune_cache())
    assert pruned == {t: {"total_files_pruned": 0, "total_bytes_pruned": 0} for t in TARGETS}
    cleaned = both(connections, log, "clean_cache()", lambda c: c.image.clean_cache())
    assert cleaned == {"agent": None, "glance": None}
    assert all(cached_ids(c) == [image.id] for c in connections.values())  # nothing lost

    refused = both(connections, log, "queue_image(unknown)", lambda c: c.image.queue_image(unknown))
    assert all(isinstance(a, sdk_exceptions.NotFoundException) for a in refused.values())

    deleted = both(
        connections, log, "cache_delete_image(id)", lambda c: c.image.cache_delete_image(image.id)
    )
    assert deleted == {"agent": None, "glance": None}
    assert all(cached_ids(c) == [] for c in connections.values())


def raw(conn: connection.Connection, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    response = conn.image.request(
        path, method, raise_exc=False, headers={"Accept": "application/json"}
    )
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, dict(response.headers), body


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/images/{small}", id="show"),
        pytest.param("/images?name=imagecache-test-medium", id="by-name"),
        pytest.param("/images?id={small}", id="by-id"),
        pytest.param("/images?status=active&sort_key=name&sort_dir=asc", id="by-status-sorted"),
        pytest.param("/images?limit=1&sort_key=name&sort_dir=asc", id="first-page"),
        pytest.param("/images?limit=1&sort_key=name&sort_dir=asc&marker={large}", id="next-page"),
    ],
)
def test_image_documents_are_glances_own(
    openstack_cloud: OpenStackCloud, connections: dict[str, connection.Connection], path: str
) -> None:
    ids = {
        "small": openstack_cloud.image("imagecache-test-small").id,
        "large": openstack_cloud.image("imagecache-test-large").id,
    }
    target_path = path.format(**ids)
    answers = {t: raw(connections[t], "GET", target_path) for t in TARGETS}
    for target, (status, _, body) in answers.items():
        Transcript().record(f"[{target}] GET /v2{target_path}", f"{status} {str(body)[:200]}")
    assert answers["agent"][0] == answers["glance"][0] == 200
    assert answers["agent"][2] == answers["glance"][2]  # the very same document, links included


def allowed(headers: dict[str, str]) -> set[str]:
    return {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/images/{unknown}", id="unknown-image"),
        pytest.param("GET", "/images?limit=many", id="bad-limit"),
        pytest.param("GET", "/images?marker={unknown}", id="unknown-marker"),
        pytest.param("PUT", "/cache/prune", id="put-prune"),
        pytest.param("GET", "/cache/clean", id="get-clean"),
        pytest.param("DELETE", "/cache/nodes/{small}", id="delete-nodes"),
        pytest.param("GET", "/cache/nodes/{unknown}", id="nodes-unknown"),
        pytest.param("PUT", "/cache/{unknown}", id="queue-unknown"),
        pytest.param("POST", "/cache", id="post-cache"),
    ],
)
def test_errors_match_glance(
    openstack_cloud: OpenStackCloud,
    connections: dict[str, connection.Connection],
    method: str,
    path: str,
) -> None:
    ids = {"unknown": str(uuid.uuid4()), "small": openstack_cloud.image("imagecache-test-small").id}
    target_path = path.format(**ids)
    answers = {t: raw(connections[t], method, target_path) for t in TARGETS}
    for target, (status, headers, body) in answers.items():
        allow = f" Allow: {headers.get('Allow')}" if "Allow" in headers else ""
        Transcript().record(f"[{target}] {method} /v2{target_path}", f"{status}{allow} {body}")
    (agent_status, agent_headers, agent_body), (glance_status, glance_headers, glance_body) = (
        answers["agent"],
        answers["glance"],
    )
    assert agent_status == glance_status
    assert allowed(agent_headers) == allowed(glance_headers)  # "GET, DELETE" vs "DELETE,GET"
    assert isinstance(agent_body, dict) and isinstance(glance_body, dict)
    assert agent_body.keys() == glance_body.keys() == {"code", "title", "message"}
    assert agent_body["code"] == glance_body["code"] and agent_body["title"] == glance_body["title"]
