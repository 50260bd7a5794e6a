"""Races on one image id, against a real agent process and a throttled HTTP upstream.

Covers (SPEC §2.5 "nothing wrong is ever served", issue 11):
- `DELETE` and `PUT` of the same id hammered concurrently, many rounds, while its download
  runs: every image that ends cached has exactly the upstream's bytes (md5 of what is served
  and of the file on disk), and no `PUT` answered 202 ends ``failed`` (e.g. "No such file");
- a `kill -9` right after such a round (the `PUT`'s 202 and the `DELETE`'s 204 both in) loses
  nothing: after the restart the image is queued, caching or cached, never absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.agent.conftest import random_payload as payload
from tests.agent.faults_client import AgentClient, wait_until
from tests.agent.faults_upstream import ThrottledServer
from tests.support.agents import AgentProcess

KiB = 1024
MiB = 1024 * KiB
FAST = ["--stall-timeout", "2", "--retries", "3", "--retry-backoff", "0.05", "--workers", "4"]


@pytest.fixture
def upstream() -> Iterator[ThrottledServer]:
    server = ThrottledServer()
    with server.running_in_thread():
        yield server


@pytest.fixture
def agent(tmp_path: Path, upstream: ThrottledServer) -> Iterator[AgentProcess]:
    process = AgentProcess(
        cache_dir=tmp_path / "cache", upstream=upstream.upstream, extra_args=FAST
    )
    process.start()
    yield process
    process.kill()
    print(f"--- agent log (tail) ---\n{process.logs()[-3000:]}")  # shown on failure


async def race_round(session: aiohttp.ClientSession, url: str, image_id: str) -> int:
    """`DELETE` then, while it waits for the download to stop, `PUT`; the PUT's status."""

    async def delete() -> None:
        async with session.delete(f"{url}/v2/cache/{image_id}") as response:
            assert response.status == 204, await response.text()

    async def put() -> int:
        await asyncio.sleep(random.uniform(0, 0.02))
        async with session.put(f"{url}/v2/cache/{image_id}") as response:
            return response.status

    _, status = await asyncio.gather(delete(), put())
    return status


async def hammer(url: str, image_ids: list[str], rounds: int) -> dict[str, int]:
    """`rounds` races per id (ids in parallel); the last PUT status of each id."""
    last: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(image_id: str) -> None:
            for _ in range(rounds):
                last[image_id] = await race_round(session, url, image_id)
                await asyncio.sleep(random.uniform(0.05, 0.2))  # let the new download get going

        await asyncio.gather(*(one(i) for i in image_ids))
    return last


def test_delete_racing_put_never_commits_wrong_bytes(
    upstream: ThrottledServer, agent: AgentProcess
) -> None:
    # Fast enough that the agent reads full chunks (a cancel then waits for a chunk being hashed
    # and written: the window the race needs), slow enough that DELETEs land mid-body.
    images = {f"race-{n}": payload(16 * MiB + n * 4099, f"race-{n}") for n in range(3)}
    for image_id, data in images.items():
        upstream.add(image_id, data)
        upstream.throttle[image_id] = 48 * MiB  # bytes/s
    client = AgentClient(agent.host, agent.port)
    for image_id in images:
        assert client.queue(image_id).status == 202

    last = asyncio.run(hammer(agent.url, list(images), rounds=25))
    assert set(last.values()) == {202}, last

    for image_id, data in images.items():
        report = client.wait_for_state(image_id, {"cached", "failed"}, timeout=60)
        assert report["state"] == "cached", report  # never failed with "No such file"
        served = client.call("GET", f"/v2/images/{image_id}/file", timeout=30)
        assert served.status == 200
        expected = hashlib.md5(data).hexdigest()
        assert hashlib.md5(served.body).hexdigest() == expected, f"{image_id}: wrong bytes served"
        on_disk = (agent.cache_dir / "images" / image_id).read_bytes()
        assert hashlib.md5(on_disk).hexdigest() == expected, f"{image_id}: wrong bytes committed"
    for entry in client.listing()["cached_images"]:
        assert entry["checksum"] == hashlib.md5(images[entry["image_id"]]).hexdigest()


def test_kill_9_after_a_delete_put_race_loses_no_queued_image(
    upstream: ThrottledServer, agent: AgentProcess
) -> None:
    image_id, data = "race-kill", payload(32 * MiB, "race-kill")
    upstream.add(image_id, data)
    upstream.throttle[image_id] = 48 * MiB  # the download is running at each round
    client = AgentClient(agent.host, agent.port)
    assert client.queue(image_id).status == 202
    for _ in range(8):
        wait_until(
            lambda: True if client.state(image_id)["state"] == "caching" else None,
            timeout=10,
            what="the download running",
        )
        assert asyncio.run(hammer(agent.url, [image_id], rounds=1)) == {image_id: 202}
        agent.kill()  # a crash right after the 202 and the 204 must keep the image
        agent.start()
        state = client.state(image_id)["state"]
        assert state in ("queued", "caching", "cached"), f"a 202-accepted image was lost: {state}"
    upstream.throttle.pop(image_id)
    assert client.wait_for_state(image_id, {"cached", "failed"}, timeout=60)["state"] == "cached"
    assert client.call("GET", f"/v2/images/{image_id}/file", timeout=30).body == data
