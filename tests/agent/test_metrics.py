"""The agent's /metrics: what the chart's dashboard and alerts read (SPEC §2.7, §5.1).

Covers: bytes committed to the cache (``imagecache_cached_bytes_total``), the cache limit
(``imagecache_cache_max_bytes``) and the cache filesystem's free and total bytes; every known
failure reason exported at 0 before any failure (so the first one is an increase); an upstream
refusing the agent's token (at queueing, or on the bytes of a download) counted in
``imagecache_upstream_auth_failures_total{reason="unauthorized"}`` (ImageCacheCredentialsRefused)
and a refused download failing with reason ``unauthorized``, not ``refused``; the
exposition passes ``promtool check metrics`` (skipped without promtool).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from imagecache.agent.metrics import FAILURE_REASONS
from tests.agent.conftest import IMAGE_A, IMAGE_B, Agent, AgentFactory, payload
from tests.support.prometheus import find_binary
from tests.support.upstreams import FakeGlance, Faults, HttpFileServer

UNAUTHORIZED = 'imagecache_upstream_auth_failures_total{reason="unauthorized"}'


async def scrape(agent: Agent) -> dict[str, float]:
    """The agent's /metrics as {sample name with labels: value}."""
    async with agent.client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_cached_bytes_limit_and_filesystem(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    http_upstream.add(IMAGE_A, payload(300_000))
    http_upstream.add(IMAGE_B, payload(200_000, seed=2))
    agent = await make_agent(http_upstream.upstream, max_size=50_000_000)
    before = await scrape(agent)
    assert before["imagecache_cached_bytes_total"] == 0
    assert before["imagecache_cache_max_bytes"] == 50_000_000
    for image in (IMAGE_A, IMAGE_B):
        assert await agent.put(image) == 202
        await agent.wait_for(image, "cached")
    after = await scrape(agent)
    assert after["imagecache_cached_bytes_total"] == 500_000
    assert after["imagecache_downloaded_bytes_total"] == 500_000
    stat = os.statvfs(agent.cache_dir)
    size = after["imagecache_cache_filesystem_size_bytes"]
    avail = after["imagecache_cache_filesystem_avail_bytes"]
    assert size == stat.f_blocks * stat.f_frsize
    assert 0 < avail <= size
    # A read served from the cache commits nothing new.
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
        await response.read()
    assert (await scrape(agent))["imagecache_cached_bytes_total"] == 500_000


def test_every_reason_in_the_source_starts_at_zero() -> None:
    """A reason added to the agent without FAILURE_REASONS would start its series at its first
    failure, which `increase` does not see."""
    source = Path(__file__).resolve().parents[2] / "operator" / "imagecache" / "agent"
    peer = source / "upstream" / "peer.py"  # its reasons are peer fallbacks, never failures
    literal = re.compile(r'reason="([a-z0-9_]+)"|failures\.labels\("([a-z0-9_]+)"\)')
    found = {
        match.group(1) or match.group(2)
        for path in source.rglob("*.py")
        if path != peer
        for match in literal.finditer(path.read_text())
    }
    assert {"verification", "internal_error"} <= found, "the search finds both spellings"
    assert found - set(FAILURE_REASONS) == set()


async def test_failure_reasons_start_at_zero(make_agent: AgentFactory) -> None:
    samples = await scrape(await make_agent())
    for reason in FAILURE_REASONS:
        assert samples[f'imagecache_failures_total{{reason="{reason}"}}'] == 0, reason


async def test_a_refused_upstream_token_counts_as_unauthorized(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: Path
) -> None:
    glance_upstream.add(IMAGE_A, payload(1000))
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-upstream-token\n")
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=wrong)
    assert (await scrape(agent))[UNAUTHORIZED] == 0
    # Queueing asks the upstream for the image's metadata: refused, so the PUT answers 503.
    assert await agent.put(IMAGE_A) == 503
    samples = await scrape(agent)
    assert samples[UNAUTHORIZED] == 1
    assert samples['imagecache_failures_total{reason="unauthorized"}'] == 0, "no download ran"


async def test_a_download_refused_by_the_upstream_counts_as_unauthorized(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: Path
) -> None:
    glance_upstream.add(IMAGE_B, payload(1000))
    # The metadata comes through; the bytes are refused (and refused again when retried).
    glance_upstream.faults[IMAGE_B] = Faults(fail_times=5, fail_status=401)
    token = tmp_path / "token"
    token.write_text("upstream-secret\n")
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=token)
    assert await agent.put(IMAGE_B) == 202
    report = await agent.wait_for(IMAGE_B, "failed")
    assert "401" in report["error"]
    samples = await scrape(agent)
    assert samples['imagecache_failures_total{reason="unauthorized"}'] == 1
    assert samples['imagecache_failures_total{reason="refused"}'] == 0
    assert samples[UNAUTHORIZED] == 1


async def test_promtool_check_metrics(
    make_agent: AgentFactory, http_upstream: HttpFileServer
) -> None:
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip("promtool not found (apt-get install prometheus)")
    http_upstream.add(IMAGE_A, payload(1000))
    agent = await make_agent(http_upstream.upstream)
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    deadline = time.monotonic() + 10  # the duration is observed just after the image is listed
    while (await scrape(agent)).get("imagecache_download_duration_seconds_count") != 1:
        assert time.monotonic() < deadline, "the download's duration was never observed"
        await asyncio.sleep(0.01)
    async with agent.client.get("/metrics") as response:
        text = await response.text()
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
