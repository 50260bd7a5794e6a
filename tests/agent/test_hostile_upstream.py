"""An upstream that is hostile: real agent processes against `HostileGlance` (tests/support).

Covers, each as a class of answers the agent must not trust past its bounds (issue 11):
- redirects are never followed — on the metadata request, the byte request and the read-through
  path: the upstream token never reaches the other host (nothing reaches it at all), nothing is
  cached, the image fails with the reason, a read-through answers 502;
- an ``os_hash_algo`` outside the allow-list (``shake_128``, which hashlib accepts) fails the
  image at once, before a byte is fetched, on the Glance and the file upstream alike;
- a metadata document over the 1 MiB limit is refused without being read whole;
- a body longer than its declared size fails at the first extra chunk, not at ``max_size``;
- without a declared size, ``max_size`` still holds across images (LRU eviction as they grow);
- a read-through whose upstream body ends short of the promised ``Content-Length`` aborts the
  client's connection instead of leaving it waiting;
- metadata is fetched once per image (the PUT's answer is handed to the download);
- Range edges on a cached image answer 416 as RFC 9110 says (``bytes=-0``, ``bytes=N-``).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import random_payload as payload
from tests.agent.faults_client import AgentClient, request
from tests.support.agents import AgentProcess
from tests.support.hostile import Elsewhere, HostileGlance, Hostility
from tests.support.upstreams import write_file_image

KiB = 1024
MiB = 1024 * KiB
TOKEN = "upstream-secret"
IMAGE = "3f1d2c3b-4a5e-4e7b-9b8a-2c4e8a1e6f0e"
FAST = ["--stall-timeout", "2", "--retries", "2", "--retry-backoff", "0.05"]

StartAgent = Callable[..., AgentClient]


def image_id(n: int) -> str:
    return f"{n:08x}-4a5e-4e7b-9b8a-2c4e8a1e6f0e"


@pytest.fixture
def elsewhere() -> Iterator[Elsewhere]:
    server = Elsewhere()
    with server.running_in_thread():
        yield server


@pytest.fixture
def glance() -> Iterator[HostileGlance]:
    server = HostileGlance(token=TOKEN)
    with server.running_in_thread():
        yield server


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """Start agents with the upstream token (killed at teardown); returns a client."""
    started: list[AgentProcess] = []
    token_file = tmp_path / "upstream-token"
    token_file.write_text(f"{TOKEN}\n")

    def start(upstream: str, *args: str) -> AgentClient:
        agent = AgentProcess(
            cache_dir=tmp_path / f"cache{len(started)}",
            upstream=upstream,
            extra_args=["--upstream-token-file", str(token_file), *FAST, *args],
        )
        agent.start()
        started.append(agent)
        return AgentClient(agent.host, agent.port)

    yield start
    for agent in started:
        agent.kill()
        print(f"--- agent {agent.url} log (tail) ---\n{agent.logs()[-3000:]}")  # shown on failure


def assert_nothing_cached(client: AgentClient) -> None:
    listing = client.listing()
    assert listing["cached_images"] == []
    assert listing["queued_images"] == []


# --- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["metadata", "file"])
def test_a_redirect_is_never_followed_and_the_token_stays_home(
    where: str, glance: HostileGlance, elsewhere: Elsewhere, start_agent: StartAgent
) -> None:
    glance.add(IMAGE, payload(256 * KiB, "redirect"))
    target = f"{elsewhere.url}/v2/images/{IMAGE}"
    glance.hostility[IMAGE] = (
        Hostility(redirect_metadata=target)
        if where == "metadata"
        else Hostility(redirect_file=f"{target}/file")
    )
    client = start_agent(glance.upstream)

    assert client.queue(IMAGE).status == 202
    failed = client.wait_for_state(IMAGE, {"failed", "cached"})
    assert failed["state"] == "failed"
    assert "redirect" in failed["error"], failed
    assert_nothing_cached(client)

    read = client.call("GET", f"/v2/images/{IMAGE}/file")
    assert read.status == 502, read
    assert "redirect" in read.json()["message"]

    assert elsewhere.tokens == []  # not even a request without the token went there


def test_a_redirect_on_the_http_upstream_is_not_followed_either(
    tmp_path: Path, elsewhere: Elsewhere, start_agent: StartAgent
) -> None:
    """The plain HTTP upstream (HEAD for metadata): the same rule, through the same client."""
    from aiohttp import web

    from tests.support.upstreams import HttpFileServer

    class Redirecting(HttpFileServer):
        async def _handle(self, request: web.Request) -> web.StreamResponse:
            self._record(request)
            raise web.HTTPFound(f"{elsewhere.url}/{request.match_info['image_id']}")

    server = Redirecting()
    with server.running_in_thread():
        client = start_agent(server.upstream)
        assert client.queue(IMAGE).status == 202
        failed = client.wait_for_state(IMAGE, {"failed", "cached"})
        assert failed["state"] == "failed" and "redirect" in failed["error"], failed
        assert client.call("GET", f"/v2/images/{IMAGE}/file").status == 502
    assert elsewhere.tokens == []
    assert_nothing_cached(client)


# --- metadata within bounds ----------------------------------------------------------------


@pytest.mark.parametrize("upstream", ["glance", "file"])
def test_an_unsupported_hash_algo_fails_at_once(
    upstream: str, glance: HostileGlance, tmp_path: Path, start_agent: StartAgent
) -> None:
    data = payload(128 * KiB, "shake")
    if upstream == "glance":
        glance.add(IMAGE, data, os_hash_algo="shake_128")
        client = start_agent(glance.upstream)
    else:
        directory = tmp_path / "images"
        write_file_image(directory, IMAGE, data, os_hash_algo="shake_128")
        client = start_agent(f"file://{directory}")

    assert client.queue(IMAGE).status == 202
    failed = client.wait_for_state(IMAGE, {"failed", "cached"})
    assert failed["state"] == "failed"
    assert "unsupported os_hash_algo 'shake_128'" in failed["error"], failed
    assert glance.count("GET", IMAGE) == 0  # not one byte was asked for
    # A new PUT is a fresh attempt that fails the same way (never stuck in caching).
    assert client.queue(IMAGE).status == 202
    assert client.wait_for_state(IMAGE, {"failed", "cached"})["state"] == "failed"
    assert_nothing_cached(client)


def test_an_oversized_metadata_document_is_refused_unread(
    glance: HostileGlance, start_agent: StartAgent
) -> None:
    glance.add(IMAGE, payload(64 * KiB, "big-doc"))
    padding = 64 * MiB
    glance.hostility[IMAGE] = Hostility(padding=padding)
    client = start_agent(glance.upstream)

    assert client.queue(IMAGE).status == 202
    failed = client.wait_for_state(IMAGE, {"failed", "cached"})
    assert failed["state"] == "failed"
    assert "larger than 1048576 bytes" in failed["error"], failed
    assert glance.sent[IMAGE] < 16 * MiB  # the agent stopped reading near the limit
    assert_nothing_cached(client)


def test_a_body_longer_than_declared_fails_at_the_first_extra_chunk(
    glance: HostileGlance, start_agent: StartAgent
) -> None:
    size = 1 * MiB
    glance.add(IMAGE, payload(size, "long"))
    glance.hostility[IMAGE] = Hostility(extra=256 * MiB)
    client = start_agent(glance.upstream)

    assert client.queue(IMAGE).status == 202
    failed = client.wait_for_state(IMAGE, {"failed", "cached"}, timeout=60)
    assert failed["state"] == "failed"
    assert f"more than the declared {size} bytes" in failed["error"], failed
    assert glance.sent[IMAGE] < size + 32 * MiB  # not read on towards max_size
    assert_nothing_cached(client)


def test_without_a_declared_size_max_size_still_holds(
    glance: HostileGlance, start_agent: StartAgent
) -> None:
    ids = [image_id(n) for n in range(3)]
    for n, image in enumerate(ids):
        glance.add(image, payload(4 * MiB, f"unsized-{n}"))
        glance.hostility[image] = Hostility(fields={"size": None})
    client = start_agent(glance.upstream, "--max-size", "10M", "--workers", "1")

    for image in ids:
        assert client.queue(image).status == 202
        assert client.wait_for_state(image, {"cached", "failed"})["state"] == "cached"
    cached = client.listing()["cached_images"]
    assert sum(entry["size"] for entry in cached) <= 10 * MiB, cached
    assert ids[2] in [entry["image_id"] for entry in cached]  # the oldest made way


def test_read_through_of_a_short_body_aborts_the_client(
    glance: HostileGlance, start_agent: StartAgent
) -> None:
    size = 1 * MiB
    glance.add(IMAGE, payload(size, "short"))
    glance.hostility[IMAGE] = Hostility(chunked_short_by=1000)
    client = start_agent(glance.upstream, "--no-cache-on-read")

    connection = http.client.HTTPConnection(client.host, client.port, timeout=30)
    try:
        connection.request("GET", f"/v2/images/{IMAGE}/file")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == str(size)
        with pytest.raises(http.client.IncompleteRead) as short:
            response.read()
        assert len(short.value.partial) == size - 1000
    finally:
        connection.close()


def test_metadata_is_fetched_once_per_image(glance: HostileGlance, start_agent: StartAgent) -> None:
    glance.add(IMAGE, payload(256 * KiB, "once"))
    client = start_agent(glance.upstream)

    assert client.queue(IMAGE).status == 202
    assert client.wait_for_state(IMAGE, {"cached", "failed"})["state"] == "cached"
    assert glance.metadata_requests(IMAGE) == 1, glance.requests
    assert glance.count("GET", IMAGE) == 1


# --- Range on a cached image ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "content_range"),
    [
        pytest.param("bytes=-0", 416, "bytes */{size}", id="zero-suffix"),
        pytest.param("bytes={size}-", 416, "bytes */{size}", id="start-at-end"),
        pytest.param("bytes={past}-", 416, "bytes */{size}", id="start-past-end"),
        pytest.param("bytes={last}-", 206, "bytes {last}-{last}/{size}", id="last-byte"),
        pytest.param("bytes=-1", 206, "bytes {last}-{last}/{size}", id="one-byte-suffix"),
    ],
)
def test_range_edges_on_a_cached_image(
    header: str, status: int, content_range: str, tmp_path: Path, start_agent: StartAgent
) -> None:
    size = 100 * KiB
    directory = tmp_path / "images"
    write_file_image(directory, IMAGE, payload(size, "range"))
    client = start_agent(f"file://{directory}")
    assert client.queue(IMAGE).status == 202
    assert client.wait_for_state(IMAGE, {"cached", "failed"})["state"] == "cached"

    values = {"size": size, "last": size - 1, "past": size + 10}
    reply = request(
        client.host,
        client.port,
        "GET",
        f"/v2/images/{IMAGE}/file",
        headers={"Range": header.format(**values)},
    )
    assert reply.status == status, (reply.status, reply.headers)
    assert reply.header("Content-Range") == content_range.format(**values)
    if status == 416:
        assert reply.body == b""


def test_the_failure_metric_counts_reasons_not_messages(
    glance: HostileGlance, start_agent: StartAgent
) -> None:
    glance.add(IMAGE, payload(64 * KiB, "metric"), os_hash_algo="shake_128")
    client = start_agent(glance.upstream)
    assert client.queue(IMAGE).status == 202
    assert client.wait_for_state(IMAGE, {"failed", "cached"})["state"] == "failed"
    metrics = client.call("GET", "/metrics").body.decode()
    assert 'imagecache_failures_total{reason="unsupported_hash_algo"} 1.0' in metrics, [
        line for line in metrics.splitlines() if "failures" in line
    ]
