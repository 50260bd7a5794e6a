"""Agent fault tests: real agent processes, real upstream servers, real crashes.

Covers (SPEC §2.5, §6 "Faults"):
- `kill -9` of the agent mid-download, several times in a row, then restart: the image ends
  cached and byte-identical, is never listed as cached or served while partial, and the
  download resumes from the bytes already in `incomplete/<id>` (Range requests, bytes counted
  on the upstream side, progress reflecting the resumed offset);
- `kill -9` right after `PUT` answered 202 loses no queued image (the queue is durable);
- SIGTERM mid-download exits 0 within `--drain-timeout` and the download resumes at next start;
- an upstream that stalls, drops the connection, serves too few bytes, serves wrong bytes
  (checksum mismatch → `invalid/<id>`), answers 5xx a few times then succeeds, or always:
  failure with a reason that names the fault (or success after retries), nothing cached, and a
  healthy download running alongside is unaffected;
- disk full: an image larger than `--max-size`, and a tiny real tmpfs as the cache directory:
  a clear failure, and the agent keeps caching other images afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import random_payload as payload
from tests.agent.faults_client import AgentClient, wait_until
from tests.agent.faults_upstream import ThrottledServer
from tests.support.agents import AgentProcess
from tests.support.upstreams import FakeGlance, Faults, write_file_image

KiB = 1024
MiB = 1024 * KiB

# Small timeouts so that every fault resolves in about a second.
# The agent hands the upstream's bytes to disk in chunks of up to this size (its documented
# memory bound), so a crash can lose at most about this much of what the upstream had sent.
try:
    from imagecache.agent.upstream.port import CHUNK_SIZE as AGENT_CHUNK
except ImportError:  # pragma: no cover - the agent module moved; assume SPEC-sized chunks
    AGENT_CHUNK = 4 * MiB

FAST = ["--stall-timeout", "0.5", "--retries", "2", "--retry-backoff", "0.05", "--workers", "2"]

StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def upstream() -> Iterator[ThrottledServer]:
    server = ThrottledServer()
    with server.running_in_thread():
        yield server


@pytest.fixture
def glance() -> Iterator[FakeGlance]:
    server = FakeGlance()
    with server.running_in_thread():
        yield server


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """Start agents (killed at teardown); `cache_dir` defaults to a fresh directory."""
    started: list[AgentProcess] = []

    def start(upstream: str, *args: str, cache_dir: Path | None = None) -> AgentProcess:
        agent = AgentProcess(
            cache_dir=cache_dir or tmp_path / f"cache{len(started)}",
            upstream=upstream,
            extra_args=[*FAST, *args],
        )
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()
        print(f"--- agent {agent.url} log (tail) ---\n{agent.logs()[-3000:]}")  # shown on failure


def client_for(agent: AgentProcess) -> AgentClient:
    return AgentClient(agent.host, agent.port)


def fetch(client: AgentClient, image_id: str) -> bytes:
    reply = client.call("GET", f"/v2/images/{image_id}/file", timeout=30)
    assert reply.status == 200, reply
    return reply.body


def assert_not_cached(client: AgentClient, image_id: str) -> None:
    listing = client.listing()
    assert image_id not in [e["image_id"] for e in listing["cached_images"]]
    assert image_id not in listing["queued_images"]


# --- kill -9 mid-download ------------------------------------------------------------------


def test_kill_9_mid_download_resumes_and_never_exposes_a_partial(
    upstream: ThrottledServer, start_agent: StartAgent
) -> None:
    # Big enough for several of the agent's write chunks, slow enough for kills to land mid-body.
    image_id, data = "crashy", payload(5 * AGENT_CHUNK, "crashy")
    upstream.add(image_id, data)
    upstream.throttle[image_id] = 2.5 * AGENT_CHUNK  # bytes/s: the whole body takes ~2 s
    agent = start_agent(upstream.upstream)
    client = client_for(agent)
    partial = agent.cache_dir / "incomplete" / image_id

    def partial_size() -> int:
        try:
            return partial.stat().st_size
        except FileNotFoundError:
            return 0

    def check_never_partial() -> None:
        """The image is not listed as cached, and is never served short while partial."""
        assert image_id not in client.cached_ids(), "a partial image is listed as cached"
        head = client.call("HEAD", f"/v2/images/{image_id}/file")
        if head.status == 200:
            assert head.header("content-length") == str(len(data)), head

    assert client.queue(image_id).status == 202
    left_behind: list[int] = []
    for _ in range(3):
        floor = (left_behind[-1] if left_behind else 0) + 1

        def grown(floor: int = floor) -> int | None:
            size = partial_size()
            return size if size >= floor else None

        wait_until(grown, timeout=10, what=f"incomplete/{image_id} to grow past {floor} bytes")
        check_never_partial()
        agent.kill()
        left_behind.append(partial_size())
        assert 0 < left_behind[-1] < len(data), "the kill did not land mid-body"
        agent.start()
        check_never_partial()
        assert client.state(image_id)["state"] in {"queued", "caching"}

    assert left_behind == sorted(left_behind), f"incomplete/ did not grow: {left_behind}"
    # Progress reflects the resumed offset as soon as the resumed request is under way.
    ranges = wait_until(
        lambda: (
            r if len(r := [s.range for s in upstream.requests if s.method == "GET"]) >= 4 else None
        ),
        timeout=10,
        what="the resumed request after the last restart",
    )
    last_offset = _range_start(ranges[-1])
    report = client.state(image_id)
    if report["state"] == "caching":
        assert report["bytes"] >= last_offset, report

    def finished() -> dict[str, object] | None:
        report = client.state(image_id)
        if report["state"] == "cached":
            return report
        assert report["state"] in {"queued", "caching"}, report
        check_never_partial()
        return None

    wait_until(finished, timeout=15, what=f"{image_id} to be cached after the restarts")
    assert fetch(client, image_id) == data
    assert not partial.exists()

    # Every restart resumed from where the last one stopped instead of starting over.
    offsets = [_range_start(r) for r in ranges[1:]]
    assert all(offset > 0 for offset in offsets), f"restarts started over: {ranges}"
    started_over = len(data) + sum(left_behind)
    assert upstream.served[image_id] <= len(data) + 3 * (AGENT_CHUNK + 512 * KiB), (
        f"upstream served {upstream.served[image_id]} bytes for a {len(data)}-byte image "
        f"(a download that starts over each time would serve about {started_over})"
    )


def test_kill_9_right_after_202_loses_no_queued_image(
    upstream: ThrottledServer, start_agent: StartAgent
) -> None:
    """A 202 means durably queued: a crash at once after it loses nothing."""
    images = {f"queued-{n}": payload(64 * KiB + n, f"queued-{n}") for n in range(4)}
    for image_id, data in images.items():
        upstream.add(image_id, data)
    upstream.throttle["queued-0"] = 256 * KiB  # keeps the single worker busy
    agent = start_agent(upstream.upstream, "--workers", "1")
    client = client_for(agent)
    for image_id in images:
        assert client.queue(image_id).status == 202
    agent.kill()
    assert agent.cache_dir.is_dir()
    upstream.throttle.pop("queued-0")

    agent.start()
    listing = client.listing()
    cached = {entry["image_id"] for entry in listing["cached_images"]}
    assert set(listing["queued_images"]) | cached == set(images), listing
    for image_id, data in images.items():
        assert client.wait_for_state(image_id, {"cached", "failed"})["state"] == "cached"
        assert fetch(client, image_id) == data


def test_sigterm_mid_download_exits_0_in_time_and_resumes(
    upstream: ThrottledServer, start_agent: StartAgent
) -> None:
    """SIGTERM drains within --drain-timeout; the abandoned download resumes at next start."""
    image_id, data = "drained", payload(4 * AGENT_CHUNK, "drained")
    upstream.add(image_id, data)
    upstream.throttle[image_id] = 2 * AGENT_CHUNK  # ~2 s: still running when SIGTERM lands
    agent = start_agent(upstream.upstream, "--drain-timeout", "1")
    client = client_for(agent)
    partial = agent.cache_dir / "incomplete" / image_id
    assert client.queue(image_id).status == 202
    wait_until(
        lambda: True if partial.exists() and partial.stat().st_size > 0 else None,
        timeout=10,
        what="the first chunk on disk",
    )
    started = time.monotonic()
    assert agent.stop(timeout=10) == 0
    assert time.monotonic() - started < 1 + 3, "drain exceeded --drain-timeout by too much"
    assert partial.exists(), "the partial download was thrown away"

    upstream.throttle.pop(image_id)
    agent.start()
    assert client.wait_for_state(image_id, {"cached", "failed"})["state"] == "cached"
    assert fetch(client, image_id) == data
    gets = [s for s in upstream.requests if s.method == "GET" and s.path == f"/{image_id}"]
    assert _range_start(gets[-1].range) > 0, gets


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-\d*", header or "")
    return int(match.group(1)) if match else 0


# --- upstream faults -----------------------------------------------------------------------

HTTP_FAULTS = [
    pytest.param(Faults(stall_after=64 * KiB), r"stall|time[ds]? ?out", id="stall"),
    pytest.param(
        Faults(drop_after=64 * KiB, drop_times=1000),
        r"connect|clos|drop|disconnect|reset|incomplete|payload|short|eof",
        id="drop-always",
    ),
    pytest.param(Faults(fail_times=1000, fail_status=503), r"503|unavailable", id="5xx-always"),
    pytest.param(Faults(fail_times=1000, fail_status=500), r"500|server error", id="500-always"),
]


@pytest.mark.parametrize(("faults", "reason"), HTTP_FAULTS)
def test_transient_fault_fails_after_retries_and_spares_others(
    upstream: ThrottledServer, start_agent: StartAgent, faults: Faults, reason: str
) -> None:
    upstream.add("broken", payload(256 * KiB, "broken"))
    upstream.faults["broken"] = faults
    healthy = payload(512 * KiB, "healthy")
    upstream.add("healthy", healthy)
    agent = start_agent(upstream.upstream)
    client = client_for(agent)

    assert client.queue("broken").status == 202
    assert client.queue("healthy").status == 202
    report = client.wait_for_state("broken", {"failed", "cached"}, timeout=15)
    assert report["state"] == "failed", report
    assert re.search(reason, report["error"] or "", re.IGNORECASE), report
    attempts = upstream.count("GET", "broken")
    assert 2 <= attempts <= 3, f"--retries 2 should mean 2 (or 1+2) attempts, saw {attempts}"
    assert report["attempts"] == attempts, report
    assert_not_cached(client, "broken")
    assert not (agent.cache_dir / "broken").exists()

    assert client.wait_for_state("healthy", {"cached", "failed"})["state"] == "cached"
    assert fetch(client, "healthy") == healthy
    assert client.call("GET", "/readyz").status == 200


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(fail_times=2, fail_status=503), id="503-twice"),
        pytest.param(Faults(fail_times=1, fail_status=502), id="502-once"),
        pytest.param(Faults(drop_after=100 * KiB, drop_times=1), id="drop-once-early"),
        # Past the agent's first write chunk, so there are bytes on disk to resume from.
        pytest.param(Faults(drop_after=AGENT_CHUNK + 100 * KiB, drop_times=1), id="drop-once-late"),
    ],
)
def test_transient_fault_then_success_caches_the_image(
    upstream: ThrottledServer, start_agent: StartAgent, faults: Faults
) -> None:
    data = payload(2 * AGENT_CHUNK + 1000, "flaky")
    upstream.add("flaky", data)
    upstream.faults["flaky"] = faults
    agent = start_agent(upstream.upstream, "--retries", "3")
    client = client_for(agent)

    assert client.queue("flaky").status == 202
    report = client.wait_for_state("flaky", {"cached", "failed"}, timeout=15)
    assert report["state"] == "cached", report
    assert fetch(client, "flaky") == data
    gets = [s for s in upstream.requests if s.method == "GET" and s.path == "/flaky"]
    assert len(gets) >= 2, gets
    if faults.drop_after is not None and faults.drop_after > AGENT_CHUNK:
        # The retry after a broken body continues from the bytes already on disk.
        assert _range_start(gets[-1].range) > 0, gets
        assert upstream.served["flaky"] < len(data) + faults.drop_after, "it started over"


GLANCE_FAULTS = [
    pytest.param(Faults(corrupt=True), r"checksum|md5|sha|hash|digest", id="wrong-bytes"),
    pytest.param(Faults(short_by=1000), r"size|short|length|bytes|incomplete", id="too-few-bytes"),
]


@pytest.mark.parametrize(("faults", "reason"), GLANCE_FAULTS)
def test_wrong_or_short_body_is_permanent_and_kept_in_invalid(
    glance: FakeGlance, start_agent: StartAgent, faults: Faults, reason: str
) -> None:
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    glance.add(bad, payload(300 * KiB, "bad"))
    glance.faults[bad] = faults
    good_data = payload(200 * KiB, "good")
    glance.add(good, good_data)
    agent = start_agent(glance.upstream)
    client = client_for(agent)

    assert client.queue(bad).status == 202
    assert client.queue(good).status == 202
    report = client.wait_for_state(bad, {"failed", "cached"})
    assert report["state"] == "failed", report
    assert re.search(reason, report["error"] or "", re.IGNORECASE), report
    assert glance.count("GET", bad) == 1, "a mismatch is permanent: no retry"
    assert report["attempts"] == 1, report
    assert_not_cached(client, bad)
    assert (agent.cache_dir / "invalid" / bad).is_file(), list(agent.cache_dir.rglob("*"))

    assert client.wait_for_state(good, {"cached", "failed"})["state"] == "cached"
    assert fetch(client, good) == good_data

    # A failed image keeps its reason until re-queued; a new PUT starts a fresh attempt.
    glance.faults.pop(bad)
    assert client.queue(bad).status == 202
    assert client.wait_for_state(bad, {"cached", "failed"})["state"] == "cached"


def test_wrong_sidecar_checksum_on_file_upstream(tmp_path: Path, start_agent: StartAgent) -> None:
    source = tmp_path / "images"
    write_file_image(source, "lying", payload(100 * KiB, "lying"), checksum="0" * 32)
    agent = start_agent(f"file://{source}")
    client = client_for(agent)
    assert client.queue("lying").status == 202
    report = client.wait_for_state("lying", {"failed", "cached"})
    assert report["state"] == "failed", report
    assert re.search(r"checksum|md5", report["error"] or "", re.IGNORECASE), report
    assert (agent.cache_dir / "invalid" / "lying").is_file()
    assert_not_cached(client, "lying")


# --- disk full -----------------------------------------------------------------------------


def test_image_larger_than_max_size_fails_and_agent_keeps_working(
    upstream: ThrottledServer, start_agent: StartAgent
) -> None:
    upstream.add("huge", payload(2 * MiB, "huge"))
    small = payload(64 * KiB, "small")
    upstream.add("small", small)
    agent = start_agent(upstream.upstream, "--max-size", "1M")
    client = client_for(agent)

    reply = client.queue("huge")
    assert reply.status in {202, 400}, reply
    if reply.status == 202:
        report = client.wait_for_state("huge", {"failed", "cached"})
        assert report["state"] == "failed", report
        assert re.search(r"size|large|big|max", report["error"] or "", re.IGNORECASE), report
    assert_not_cached(client, "huge")
    assert upstream.served["huge"] == 0, "an oversized image must not be downloaded at all"

    assert client.queue("small").status == 202
    assert client.wait_for_state("small", {"cached", "failed"})["state"] == "cached"
    assert fetch(client, "small") == small


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (needs root and mount permission; skipped otherwise)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); disk-full test skipped")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); disk-full test skipped")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_a_clear_failure_and_agent_keeps_working(
    tiny_fs: Path, upstream: ThrottledServer, start_agent: StartAgent
) -> None:
    upstream.add("toobig", payload(3 * MiB, "toobig"))
    small = payload(128 * KiB, "fits")
    upstream.add("fits", small)
    agent = start_agent(upstream.upstream, cache_dir=tiny_fs / "cache")
    client = client_for(agent)

    assert client.queue("toobig").status == 202
    report = client.wait_for_state("toobig", {"failed", "cached"})
    assert report["state"] == "failed", report
    assert re.search(r"space|disk|full|ENOSPC|errno 28", report["error"] or "", re.I), report
    assert upstream.count("GET", "toobig") == 1, "disk full is permanent: no retry"
    assert_not_cached(client, "toobig")

    # The space taken by the failed download is given back: the next image still fits.
    assert client.queue("fits").status == 202
    assert client.wait_for_state("fits", {"cached", "failed"})["state"] == "cached"
    assert fetch(client, "fits") == small
    assert client.call("GET", "/readyz").status == 200
    agent.kill()
