"""The stock Glance CLI (python-glanceclient) against a real agent.

Covers (SPEC §2.4 "Compatibility test"): `glance --os-image-url URL --os-auth-token T` exactly
as written there (no `--os-image-api-version`, a fresh `HOME`) with `cache-list`, `cache-queue`,
`cache-delete` and `cache-clear` (both, `--target cache`, `--target queue`), a wrong token and an
unknown image; each asserts on the CLI's exit code and output *and* on the agent's own state.

Without an explicit API version the CLI first downloads `/v2/schemas/{image,metadefs/namespace,
metadefs/resource_type}` into `~/.glanceclient` and falls back to v1 (no cache commands) when
none answers. It offers the cache commands only when `/versions` lists v2.14 or later, sends
`PUT` with `Content-Type: application/octet-stream` and no body, and renders every key of
`GET /v2/cache` other than `cached_images` as a list of queued image ids.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.faults_client import AgentClient, wait_until
from tests.agent.faults_upstream import ThrottledServer
from tests.support.agents import AgentProcess
from tests.support.upstreams import Faults

TOKEN = "glance-cli-token"
GLANCE = shutil.which("glance", path=str(Path(sys.executable).parent)) or "glance"


@dataclass
class Setup:
    agent: AgentProcess
    upstream: ThrottledServer
    client: AgentClient
    home: Path

    def glance(self, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["HOME"] = str(self.home)  # the schema cache starts empty, as on a fresh machine
        return subprocess.run(
            [GLANCE, "--os-image-url", self.agent.url, "--os-auth-token", token, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if not Path(GLANCE).exists() and shutil.which(GLANCE) is None:
        pytest.fail("the glance CLI (python-glanceclient) is not installed in this environment")
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    server = ThrottledServer()
    with server.running_in_thread():
        agent = AgentProcess(
            cache_dir=tmp_path / "cache",
            upstream=server.upstream,
            token_file=token_file,
            extra_args=["--workers", "1", "--retries", "1"],
        )
        agent.start()
        try:
            yield Setup(
                agent=agent,
                upstream=server,
                client=AgentClient(agent.host, agent.port, TOKEN),
                home=tmp_path / "home",
            )
        finally:
            agent.kill()


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a prettytable, as lists of stripped cells."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("|")
    ]
    assert rows and rows[0][:2] == ["ID", "State"], output
    return rows[1:]


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Unable" not in done.stderr and "ERROR" not in done.stderr.upper(), done.stderr
    assert "falling back to v1" not in done.stderr, done.stderr
    return done.stdout


def test_cli_uses_v2_and_caches_the_agent_schemas(setup: Setup) -> None:
    ok(setup.glance("cache-list"))
    cached = sorted(p.name for p in (setup.home / ".glanceclient").iterdir())
    assert cached == ["image_schema.json", "namespace_schema.json", "resource_type_schema.json"]
    image_schema = json.loads((setup.home / ".glanceclient" / "image_schema.json").read_text())
    assert image_schema["name"] == "image"
    assert {"id", "status", "size", "checksum"} <= set(image_schema["properties"])


def test_queue_list_delete_clear_with_the_stock_cli(setup: Setup) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    setup.upstream.add(first, b"1" * 10_000)
    setup.upstream.add(second, b"2" * 20_000)

    assert table_rows(ok(setup.glance("cache-list"))) == []

    ok(setup.glance("cache-queue", first, second))
    for image_id in (first, second):
        assert setup.client.wait_for_state(image_id, {"cached", "failed"})["state"] == "cached"

    rows = {row[0]: row for row in table_rows(ok(setup.glance("cache-list")))}
    assert set(rows) == {first, second}, rows
    assert rows[first][1] == "cached" and rows[first][4] == "10000", rows
    assert rows[second][1] == "cached" and rows[second][4] == "20000", rows
    assert rows[first][5] == "0", "no hits yet"

    ok(setup.glance("cache-delete", first))
    assert setup.client.cached_ids() == [second]

    ok(setup.glance("cache-clear", "--target", "cache"))
    listing = setup.client.listing()
    assert listing["cached_images"] == [] and listing["queued_images"] == []


def test_clear_targets_queue_and_both(setup: Setup) -> None:
    slow, waiting, done = (str(uuid.uuid4()) for _ in range(3))
    setup.upstream.add(done, b"d" * 5_000)
    setup.upstream.add(slow, b"s" * 2_000_000)
    setup.upstream.throttle[slow] = 200_000  # ten seconds: still downloading when we clear
    setup.upstream.add(waiting, b"w" * 5_000)

    ok(setup.glance("cache-queue", done))
    setup.client.wait_for_state(done, {"cached"})
    ok(setup.glance("cache-queue", slow, waiting))
    setup.client.wait_for_state(slow, {"caching"})
    listing = setup.client.listing()
    assert listing["queued_images"] == [slow, waiting], listing

    ok(setup.glance("cache-clear", "--target", "queue"))
    wait_until(
        lambda: True if setup.client.listing()["queued_images"] == [] else None,
        timeout=5,
        what="the queue to be empty after cache-clear --target queue",
    )
    assert setup.client.cached_ids() == [done], "--target queue must keep cached images"
    assert setup.client.state(slow)["state"] == "absent", "the in-flight download is cancelled"

    ok(setup.glance("cache-queue", waiting))
    setup.client.wait_for_state(waiting, {"cached"})
    ok(setup.glance("cache-clear"))
    listing = setup.client.listing()
    assert listing["cached_images"] == [] and listing["queued_images"] == [], listing


def test_cache_list_shows_queued_images_as_plain_rows(setup: Setup) -> None:
    """Queued, downloading and failed images must render as rows whose ID is an image id.

    The CLI treats every key except `cached_images` as a list of ids; a per-image object
    in an extra key would show up as a row whose ID is a dict.
    """
    slow, failing = str(uuid.uuid4()), str(uuid.uuid4())
    setup.upstream.add(slow, b"s" * 2_000_000)
    setup.upstream.throttle[slow] = 200_000
    setup.upstream.add(failing, b"m" * 1000)
    setup.upstream.faults[failing] = Faults(fail_times=1000)

    ok(setup.glance("cache-queue", failing))
    setup.client.wait_for_state(failing, {"failed"})
    ok(setup.glance("cache-queue", slow))
    setup.client.wait_for_state(slow, {"caching"})

    output = ok(setup.glance("cache-list"))
    rows = table_rows(output)
    ids = [row[0] for row in rows]
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids), output
    assert [row[1] for row in rows if row[0] == slow] == ["queued"], output


def test_unknown_image_is_reported_by_the_cli(setup: Setup) -> None:
    """The CLI turns the agent's 404 into its usual one-line message (it parses the body)."""
    unknown = str(uuid.uuid4())
    done = setup.glance("cache-queue", unknown)
    assert setup.client.listing()["queued_images"] == []
    assert "Unable to queue image" in done.stderr and "404" in done.stderr, done.stderr


def test_wrong_token_is_refused(setup: Setup) -> None:
    refused = setup.glance("cache-list", token="not-the-token")
    assert refused.returncode != 0, refused.stdout
    # glanceclient maps a 401 to this fixed message (HTTPUnauthorized in its shell).
    assert re.search(
        r"401|Unauthori[sz]ed|Invalid OpenStack Identity credentials", refused.stderr
    ), refused.stderr
