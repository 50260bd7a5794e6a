"""Boundaries between the agent's layers (issue 16, item 9).

Covers:
- an upstream error is answered the same on every path that meets it: an answer the agent
  refuses (a redirect) is 502 for ``GET /v2/images/{id}`` as for ``GET .../file`` (the
  metadata view used to say 503), a transient one 503 on both;
- `ImageCache.close` closes the upstream even when closing the database timed out;
- a deferred database write (a hit, progress) that fails is logged;
- a client that goes away in the middle of a read-through is one INFO line, no ERROR;
- a file upstream's sidecar is read by one function: the document view refuses what the
  download refuses.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from imagecache.core.images import ImageRecord
from tests.agent.conftest import IMAGE_A, AgentFactory, eventually, payload
from tests.support.agents import AgentProcess
from tests.support.upstreams import FakeGlance, Faults, HttpFileServer, write_file_image

MiB = 2**20


@pytest.mark.parametrize(
    ("metadata_status", "expected"),
    [pytest.param(302, 502, id="redirect-refused"), pytest.param(503, 503, id="transient")],
)
async def test_an_upstream_error_is_answered_alike_everywhere(
    make_agent: AgentFactory,
    glance_upstream: FakeGlance,
    tmp_path: Path,
    metadata_status: int,
    expected: int,
) -> None:
    glance_upstream.add(IMAGE_A, payload(1024))
    glance_upstream.faults[IMAGE_A] = Faults(metadata_status=metadata_status)
    token = tmp_path / "upstream-token"
    token.write_text("upstream-secret\n")
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=token)
    answers: dict[str, Any] = {}
    for path in (f"/v2/images/{IMAGE_A}", f"/v2/images/{IMAGE_A}/file"):
        async with agent.client.get(path) as response:
            answers[path] = (response.status, (await response.json())["title"])
    assert set(answers.values()) == {
        (expected, "Bad Gateway" if expected == 502 else "Service Unavailable")
    }, answers


async def test_close_releases_the_rest_when_one_step_times_out(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent()
    cache = agent.cache
    real_db_close, real_upstream_close = cache.db.close, cache.upstream.close
    closed: list[str] = []

    async def hung_db_close() -> None:
        raise TimeoutError("the writer did not finish")

    async def upstream_close() -> None:
        closed.append("upstream")
        await real_upstream_close()

    cache.db.close = hung_db_close  # type: ignore[method-assign]
    cache.upstream.close = upstream_close  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="imagecache.agent"):
        await cache.close()
    assert closed == ["upstream"]
    assert not cache.pool.alive()
    assert any("closing the database failed" in r.getMessage() for r in caplog.records)
    await real_db_close()


async def test_a_failed_deferred_write_is_logged(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent()
    broken = ImageRecord(IMAGE_A, "cached", seq=1, bytes=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="imagecache.agent.cache.db"):
        agent.cache.db.save_soon(broken)  # NOT NULL: SQLite refuses the row
        await eventually(
            lambda: any("deferred database writes" in r.getMessage() for r in caplog.records)
        )


def test_a_client_gone_mid_read_is_an_info_line(tmp_path: Path) -> None:
    """A real agent process (aiohttp's test server cancels handlers when the client goes,
    which hides what production does: the handler meets the closed connection)."""
    upstream = HttpFileServer()
    upstream.add(IMAGE_A, payload(32 * MiB))
    with upstream.running_in_thread():
        agent = AgentProcess(
            cache_dir=tmp_path / "cache",
            upstream=upstream.upstream,
            extra_args=["--no-cache-on-read", "--log-format", "json"],
        )
        agent.start()
        try:
            with socket.create_connection((agent.host, agent.port), timeout=10) as client:
                client.sendall(
                    f"GET /v2/images/{IMAGE_A}/file HTTP/1.1\r\nHost: a\r\n\r\n".encode()
                )
                assert client.recv(64 * 1024).startswith(b"HTTP/1.1 200")
            deadline = time.monotonic() + 15
            while "client_gone" not in agent.logs():
                assert time.monotonic() < deadline, agent.logs()
                time.sleep(0.05)
        finally:
            agent.stop()
    lines = [json.loads(line) for line in agent.logs().splitlines() if line.startswith("{")]
    gone = [line for line in lines if line.get("event") == "client_gone"]
    assert gone and gone[0]["level"] == "info", gone
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    assert "Traceback" not in agent.logs()


async def test_one_sidecar_reader_for_downloads_and_documents(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    """A sidecar that is no JSON object: the download refuses it, and so does the document
    view (502, as every refused upstream answer), instead of showing the image as active."""
    write_file_image(upstream_dir, IMAGE_A, payload(1024))
    (upstream_dir / f"{IMAGE_A}.json").write_text("[1, 2, 3]")
    agent = await make_agent()
    async with agent.client.get(f"/v2/images/{IMAGE_A}") as response:
        assert response.status == 502, await response.text()
    async with agent.client.get("/v2/images") as response:
        assert response.status == 200
        assert (await response.json())["images"] == []
    assert await agent.put(IMAGE_A) == 202
    failed = await agent.wait_for(IMAGE_A, "failed")
    assert "not a JSON object" in failed["error"]
