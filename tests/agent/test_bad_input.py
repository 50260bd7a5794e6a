"""Bad input against a real agent: hostile ids, wrong tokens, oversized requests.

Covers (SPEC §2.3, §2.4, §6 "Bad input"):
- traversal and malformed ids (`..`, `%2F`, `%00`, over-long, unicode, ...) in every path
  position of every endpoint that takes an id → 404 with Glance's JSON error shape; no request
  reaches the upstream, and nothing outside the cache directory (nor a cached image inside it)
  is read, written or removed;
- missing and wrong tokens, in both header forms (`X-Auth-Token`, `Authorization: Bearer`) →
  401 JSON on every protected endpoint; the open endpoints stay open; right tokens pass;
- oversized request lines, headers and bodies → 4xx, never 5xx, and the agent keeps serving.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.faults_client import AgentClient, Reply, request
from tests.agent.faults_upstream import ThrottledServer
from tests.support.agents import AgentProcess
from tests.support.upstreams import FakeGlance

TOKEN = "s3cret-token"
SECOND_TOKEN = "another-accepted-token"
GOOD_ID = "good-image"
GOOD_DATA = b"good image bytes\n" * 1000

BAD_IDS = [
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("%2E%2E", id="dotdot-encoded"),
    pytest.param("..%2F..%2Fsecret", id="traversal-encoded-slash"),
    pytest.param("..%2f..%2fsecret", id="traversal-lowercase-encoding"),
    pytest.param("%2Fetc%2Fpasswd", id="absolute-encoded"),
    pytest.param("..%5C..%5Csecret", id="backslash"),
    pytest.param("%252E%252E%252Fsecret", id="double-encoded"),
    pytest.param("a%00b", id="nul-inside"),
    pytest.param("%00", id="nul"),
    pytest.param(GOOD_ID + "%00", id="nul-suffix-of-cached"),
    pytest.param("x" * 129, id="over-long"),
    pytest.param("x" * 5000, id="very-long"),
    pytest.param("%C3%BCber", id="unicode"),
    pytest.param("%E2%80%AEgood", id="unicode-rtl-override"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("a%20b", id="space"),
    pytest.param("a%0Ab", id="newline"),
    pytest.param("*", id="star"),
    pytest.param("a;b", id="semicolon"),
]

# Every endpoint that takes an image id, as (method, target template).
ID_ENDPOINTS = [
    ("GET", "/v2/cache/{}"),
    ("PUT", "/v2/cache/{}"),
    ("DELETE", "/v2/cache/{}"),
    ("GET", "/v2/images/{}/file"),
    ("HEAD", "/v2/images/{}/file"),
]

# Targets that try to escape the route itself (raw slashes and dot segments).
RAW_TARGETS = [
    "/v2/cache/../../secret",
    "/v2/cache/./..",
    "/v2/cache/x/..",
    "/v2/cache/x/%2E%2E",
    "/v2/cache/a/../../secret",
    "/v2/cache//etc/passwd",
    "/v2/cache/%2e%2e/%2e%2e/secret",
    "/v2/images/../../secret/file",
    "/v2/images/%2E%2E/file",
    "/v2/images/..%2F..%2Fsecret/file",
    "/v2/images/a/b/file",
    "/v2/images//file",
]


@dataclass
class Setup:
    agent: AgentProcess
    upstream: ThrottledServer
    secret: Path
    outside: Path

    def client(self, token: str | None = TOKEN) -> AgentClient:
        return AgentClient(self.agent.host, self.agent.port, token)


def snapshot(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Path → sha256 of every regular file under `root`, except SQLite files and `skip` prefixes.

    The database legitimately changes on reads (hits, `last_accessed`); image files must not.
    """
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if not path.is_file() or name.startswith(skip):
            continue
        if name.endswith(("-wal", "-shm", "-journal")) or _is_sqlite(path):
            continue
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("bad-input")
    token_file = base / "tokens"
    # Blank and whitespace-only lines must not turn the empty token into a valid one.
    token_file.write_text(f"\n   \n{SECOND_TOKEN}\n{TOKEN}\n\n")
    secret = base / "secret"
    secret.write_text("must never be read, served or removed\n")
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep me\n")
    server = ThrottledServer()
    server.add(GOOD_ID, GOOD_DATA)
    with server.running_in_thread():
        agent = AgentProcess(
            cache_dir=base / "cache",
            upstream=server.upstream,
            token_file=token_file,
            extra_args=["--retries", "1", "--stall-timeout", "2"],
        )
        agent.start()
        try:
            client = AgentClient(agent.host, agent.port, TOKEN)
            assert client.queue(GOOD_ID).status == 202
            client.wait_for_state(GOOD_ID, {"cached"})
            yield Setup(agent=agent, upstream=server, secret=secret, outside=outside)
        finally:
            agent.kill()


@pytest.fixture(autouse=True)
def good_image_cached(setup: Setup) -> None:
    """Every test starts with GOOD_ID cached, so one failure cannot cascade into the rest."""
    client = setup.client()
    if GOOD_ID not in client.cached_ids():
        assert client.queue(GOOD_ID).status == 202
        client.wait_for_state(GOOD_ID, {"cached"})


def assert_glance_error(reply: Reply, status: int) -> None:
    assert reply.status == status, reply
    content_type = reply.header("content-type") or ""
    assert content_type.split(";")[0].strip() == "application/json", reply
    doc = reply.json()
    assert doc["code"].startswith(str(status)), doc
    assert isinstance(doc["title"], str) and doc["title"], doc
    assert isinstance(doc["message"], str), doc
    assert "Traceback" not in reply.body.decode(errors="replace")


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "template"), [pytest.param(m, t, id=f"{m} {t}") for m, t in ID_ENDPOINTS]
)
def test_malformed_id_is_404_and_touches_nothing(
    setup: Setup, method: str, template: str, bad_id: str
) -> None:
    before_cache = snapshot(setup.agent.cache_dir)
    outside = setup.outside.parent
    before_outside = snapshot(outside, skip=("cache", "agent-"))
    seen = len(setup.upstream.requests)

    reply = setup.client().call(method, template.format(bad_id))

    assert reply.status == 404, reply
    if method != "HEAD":
        assert_glance_error(reply, 404)
    assert setup.secret.read_bytes() not in reply.body
    assert len(setup.upstream.requests) == seen, setup.upstream.requests[seen:]
    assert snapshot(outside, skip=("cache", "agent-")) == before_outside
    assert snapshot(setup.agent.cache_dir) == before_cache
    assert GOOD_ID in setup.client().cached_ids()


@pytest.mark.parametrize("target", RAW_TARGETS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_path_escapes_are_404_or_405_and_touch_nothing(
    setup: Setup, method: str, target: str
) -> None:
    seen = len(setup.upstream.requests)
    reply = setup.client().call(method, target)
    assert reply.status in {404, 405}, reply
    assert setup.secret.read_bytes() not in reply.body
    assert len(setup.upstream.requests) == seen
    assert setup.secret.exists() and (setup.outside / "keep").exists()
    assert GOOD_ID in setup.client().cached_ids()


def test_glance_upstream_accepts_only_uuids(tmp_path: Path) -> None:
    """With a Glance upstream, an id that is valid for files but not a UUID is 404 at once."""
    glance = FakeGlance()
    glance.add("not-a-uuid", b"x" * 100)
    with glance.running_in_thread():
        agent = AgentProcess(cache_dir=tmp_path / "cache", upstream=glance.upstream)
        agent.start()
        try:
            client = AgentClient(agent.host, agent.port)
            assert_glance_error(client.queue("not-a-uuid"), 404)
            assert glance.count("GET", "not-a-uuid") == 0
            assert not [s for s in glance.requests if "not-a-uuid" in s.path]
        finally:
            agent.kill()


# --- tokens --------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/v2/cache"),
    ("DELETE", "/v2/cache"),
    ("GET", f"/v2/cache/{GOOD_ID}"),
    ("PUT", f"/v2/cache/{GOOD_ID}"),
    ("DELETE", f"/v2/cache/{GOOD_ID}"),
    ("GET", f"/v2/images/{GOOD_ID}/file"),
]

BAD_CREDENTIALS = [
    pytest.param({}, id="missing"),
    pytest.param({"X-Auth-Token": ""}, id="x-auth-empty"),
    pytest.param({"X-Auth-Token": "wrong"}, id="x-auth-wrong"),
    pytest.param({"X-Auth-Token": TOKEN[:-1]}, id="x-auth-prefix"),
    pytest.param({"X-Auth-Token": TOKEN + "x"}, id="x-auth-longer"),
    pytest.param({"X-Auth-Token": TOKEN.upper()}, id="x-auth-case"),
    pytest.param({"Authorization": "Bearer wrong"}, id="bearer-wrong"),
    pytest.param({"Authorization": "Bearer "}, id="bearer-empty"),
    pytest.param({"Authorization": f"Basic {TOKEN}"}, id="basic-scheme"),
    pytest.param({"Authorization": TOKEN}, id="no-scheme"),
    pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="bearer-longer"),
    pytest.param({"X-Auth-Token": "wrong", "Authorization": "Bearer wrong"}, id="both-wrong"),
    pytest.param({"X-Auth-Token": "   "}, id="x-auth-blank"),
    pytest.param({"X-Auth-Token": f"{TOKEN},{SECOND_TOKEN}"}, id="x-auth-joined"),
    pytest.param({"X-Auth-Token": "\u00e9t\u00e9".encode().decode("latin-1")}, id="non-ascii"),
]


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
@pytest.mark.parametrize(
    ("method", "target"), [pytest.param(*p, id=" ".join(p)) for p in PROTECTED]
)
def test_missing_or_wrong_token_is_401_json(
    setup: Setup, method: str, target: str, headers: dict[str, str]
) -> None:
    reply = setup.client(token=None).call(method, target, headers=headers)
    assert_glance_error(reply, 401)
    assert GOOD_ID in setup.client().cached_ids(), "an unauthorised request changed the cache"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Auth-Token": TOKEN}, id="x-auth-token"),
        pytest.param({"Authorization": f"Bearer {TOKEN}"}, id="bearer"),
        pytest.param({"X-Auth-Token": SECOND_TOKEN}, id="second-line-of-token-file"),
    ],
)
def test_right_token_in_either_header_is_accepted(setup: Setup, headers: dict[str, str]) -> None:
    reply = setup.client(token=None).call("GET", "/v2/cache", headers=headers)
    assert reply.status == 200, reply
    assert GOOD_ID in [e["image_id"] for e in reply.json()["cached_images"]]


@pytest.mark.parametrize("target", ["/healthz", "/readyz", "/metrics", "/versions"])
def test_open_endpoints_need_no_token(setup: Setup, target: str) -> None:
    assert setup.client(token=None).call("GET", target).status == 200


# --- oversized requests --------------------------------------------------------------------


def assert_4xx_or_closed(host: str, port: int, method: str, target: str, **kw: object) -> None:
    """The agent answers 4xx (or refuses by closing the connection), never 5xx."""
    try:
        reply = request(host, port, method, target, **kw)  # type: ignore[arg-type]
    except ConnectionError:
        return
    assert 400 <= reply.status < 500, reply


@pytest.mark.parametrize(
    ("method", "target", "headers", "body"),
    [
        pytest.param("GET", "/v2/cache/" + "a" * 70_000, {}, None, id="huge-request-line"),
        pytest.param("GET", "/v2/cache", {"X-Big": "b" * 70_000}, None, id="huge-header-value"),
        pytest.param("GET", "/v2/cache", {"X-" + "n" * 70_000: "v"}, None, id="huge-header-name"),
        pytest.param(
            "GET",
            "/v2/cache",
            {"X-Auth-Token": "t" * 70_000},
            None,
            id="huge-token",
        ),
        pytest.param(
            "PUT", "/v2/cache/..%2Fsecret", {}, b"z" * (8 * 1024 * 1024), id="huge-body-bad-id"
        ),
        pytest.param("POST", "/v2/cache", {}, b"z" * (8 * 1024 * 1024), id="huge-body-post"),
        pytest.param(
            "DELETE",
            "/v2/cache",
            {"x-image-cache-clear-target": "q" * 70_000},
            None,
            id="huge-clear-target",
        ),
    ],
)
def test_oversized_requests_are_4xx_not_5xx(
    setup: Setup, method: str, target: str, headers: dict[str, str], body: bytes | None
) -> None:
    all_headers = {"X-Auth-Token": TOKEN, **headers}
    assert_4xx_or_closed(
        setup.agent.host, setup.agent.port, method, target, headers=all_headers, body=body
    )
    assert GOOD_ID in setup.client().cached_ids(), "the agent stopped serving"


def test_many_headers_are_not_a_5xx(setup: Setup) -> None:
    headers = {f"X-H{i}": "v" * 100 for i in range(2000)}
    try:
        reply = setup.client().call("GET", "/v2/cache", headers=headers)
    except ConnectionError:
        reply = None  # closing the connection is a fine answer, dying is not
    assert reply is None or reply.status < 500, reply
    assert setup.agent.process is not None and setup.agent.process.poll() is None, "agent died"
    assert GOOD_ID in setup.client().cached_ids(), "the agent stopped serving"


def test_huge_body_on_a_valid_put_is_not_a_5xx(setup: Setup) -> None:
    reply = setup.client().call(
        "PUT",
        f"/v2/cache/{GOOD_ID}",
        headers={"Content-Type": "application/json"},
        body=b"{" * (4 * 1024 * 1024),
    )
    assert reply.status in {202, 400, 413}, reply
    assert GOOD_ID in setup.client().cached_ids()


@pytest.mark.parametrize("image_id", ["incomplete", "invalid", "tmp", "cache.db", "v2", "0"])
def test_legal_ids_that_look_like_agent_files_are_just_images(setup: Setup, image_id: str) -> None:
    """Ids matching SPEC §2.3 that collide with likely internal names cache like any other."""
    data = f"image named {image_id}\n".encode() * 100
    setup.upstream.add(image_id, data)
    client = setup.client()
    assert client.queue(image_id).status == 202
    assert client.wait_for_state(image_id, {"cached", "failed"})["state"] == "cached"
    assert client.call("GET", f"/v2/images/{image_id}/file").body == data
    assert GOOD_ID in client.cached_ids()
    assert client.call("GET", f"/v2/images/{GOOD_ID}/file").body == GOOD_DATA


def test_agent_survived_everything(setup: Setup) -> None:
    """Run last in this module: the same agent process still works end to end."""
    assert setup.agent.process is not None and setup.agent.process.poll() is None
    client = setup.client()
    reply = client.call("GET", f"/v2/images/{GOOD_ID}/file")
    assert reply.status == 200 and reply.body == GOOD_DATA
    assert os.path.exists(setup.secret)
