"""What is cached is the upstream's image, byte for byte (issue 16, items 1, 2, 3 and 5).

Covers, with in-process agents over real loopback upstreams (tests/support/integrity.py):
- content encoding: the agent asks for identity only; a precompressed ``.gz`` sibling is never
  cached or streamed; an always-deflating upstream fails the image, the metadata views and the
  read-through with a ``Content-Encoding`` reason (Glance and plain HTTP upstreams);
- resume never splices two versions: ``If-Range`` carries the strong ETag (else Last-Modified)
  of the first answer, also after a restart or a ``kill -9`` of a real agent process, and a
  replaced image is fetched again from byte 0;
  with neither a validator nor a digest a download starts over; a 206 whose ``Content-Range``
  does not start at the requested offset is not appended; a file upstream's file replaced
  between attempts is read again from byte 0;
- every download ends: metadata JSON nested past the bound fails the image with a reason (not
  ``caching`` forever), so does an exception no layer expected, and a ``caching`` record no
  download owns is queued again by a ``PUT``; a nested sidecar answers a clean error, a nested
  seal is no seal;
- image ids are checked before any upstream path is built: encoded ``/``, ``..`` and ``?`` in
  ids never reach another upstream path (the upstream sees no request at all), answering 404.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from imagecache.agent.upstream.file import FileUpstream
from imagecache.agent.upstream.port import ChunkStream, ImageMeta, TransientUpstreamError
from tests.agent.conftest import IMAGE_A, AgentFactory, eventually, random_payload
from tests.agent.faults_client import AgentClient, Reply, request, wait_until
from tests.support.agents import AgentProcess
from tests.support.integrity import (
    Behaviour,
    DeflatingGlance,
    DeflatingHttp,
    PrecompressedFiles,
    RecordingGlance,
    VersionedServer,
)
from tests.support.upstreams import FakeGlance, Faults, HttpFileServer, serving, write_file_image

KiB = 1024
SIZE = 256 * KiB
NESTED = b"[" * 100_000 + b"]" * 100_000  # 200 kB: under the 1 MiB cap, far past any depth


async def raw(agent: Any, method: str, target: str) -> Reply:
    """`target` sent verbatim (no client-side normalisation of ``..`` or ``%2F``)."""
    server = agent.client.server
    return await asyncio.to_thread(request, server.host, server.port, method, target)


async def cut_once_half_is_kept(agent: Any, server: VersionedServer) -> None:
    """The first GET stalls at half the image: once the agent holds that half, cut it."""
    await agent.wait_report(IMAGE_A, lambda r: r["bytes"] >= SIZE // 2)
    server.release_stalls()


def cached_bytes(agent: Any, image_id: str) -> bytes:
    return bytes((agent.cache_dir / "images" / image_id).read_bytes())


# --- 1. content encoding ---------------------------------------------------------------------


async def test_a_precompressed_sibling_is_never_cached_or_streamed(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "www"
    directory.mkdir()
    data = random_payload(SIZE, "gz") + b"\0" * SIZE  # compressible: the .gz is much smaller
    (directory / IMAGE_A).write_bytes(data)
    (directory / f"{IMAGE_A}.gz").write_bytes(gzip.compress(data))
    async with serving(PrecompressedFiles(directory)) as server:
        assert isinstance(server, PrecompressedFiles)
        agent = await make_agent(upstream=server.upstream, cache_on_read=False)

        async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
            assert response.status == 200
            assert await response.read() == data  # the read-through streams the image itself

        assert await agent.put(IMAGE_A) == 202
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "cached", report
        assert cached_bytes(agent, IMAGE_A) == data
        assert server.encodings and set(server.encodings) == {"identity"}


@pytest.mark.parametrize("kind", ["glance", "http"])
async def test_an_always_deflating_upstream_is_refused_with_the_reason(
    kind: str, make_agent: AgentFactory
) -> None:
    server = DeflatingGlance() if kind == "glance" else DeflatingHttp()
    server.add(IMAGE_A, random_payload(SIZE, "deflate"))
    async with serving(server):
        agent = await make_agent(upstream=server.upstream, cache_on_read=False)

        assert await agent.put(IMAGE_A) == 202
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "failed", report
        assert "Content-Encoding 'deflate'" in report["error"], report
        assert not (agent.cache_dir / "images" / IMAGE_A).exists()

        for path in (f"/v2/images/{IMAGE_A}/file", f"/v2/images/{IMAGE_A}"):
            async with agent.client.get(path) as response:
                body = await response.json()
                assert response.status in (502, 503), (path, body)
                assert "Content-Encoding 'deflate'" in body["message"], (path, body)


# --- 2. resume never splices two versions ------------------------------------------------------


@pytest.mark.parametrize("validators", ["etag", "last-modified"])
async def test_a_resume_after_the_image_was_replaced_starts_over(
    validators: str, make_agent: AgentFactory
) -> None:
    """No digest: only the validator can tell the two versions apart."""
    old, new = random_payload(SIZE, "old"), random_payload(SIZE, "new")
    behaviour = Behaviour(
        validators=validators, stall_first_after=SIZE // 2, cut=True, replace_with=new
    )
    async with serving(VersionedServer()) as server:
        assert isinstance(server, VersionedServer)
        server.put(IMAGE_A, old, behaviour)
        agent = await make_agent(upstream=server.upstream)

        assert await agent.put(IMAGE_A) == 202
        await cut_once_half_is_kept(agent, server)
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "cached", report
        assert cached_bytes(agent, IMAGE_A) == new  # never old[:half] + new[half:]
        gets = [r for r in server.seen if r.method == "GET"]
        assert len(gets) == 2, gets
        assert gets[1].range == f"bytes={SIZE // 2}-", gets  # it did try to resume
        sent = '"v1"' if validators == "etag" else "Sat, 05 Dec 2026 10:00:01 GMT"
        assert gets[1].if_range == sent, gets


async def test_the_validator_survives_a_restart(make_agent: AgentFactory, tmp_path: Path) -> None:
    old, new = random_payload(SIZE, "old"), random_payload(SIZE, "new")
    cache_dir = tmp_path / "kept"
    async with serving(VersionedServer()) as server:
        assert isinstance(server, VersionedServer)
        server.put(IMAGE_A, old, Behaviour(stall_first_after=SIZE // 2))
        first = await make_agent(upstream=server.upstream, cache_dir=cache_dir)
        assert await first.put(IMAGE_A) == 202
        await first.wait_report(IMAGE_A, lambda r: r["bytes"] >= SIZE // 2)
        await first.client.close()  # the download stops; its partial file stays
        server.release_stalls()
        server.replace(IMAGE_A, new)
        orphan = cache_dir / "resume" / "no-partial"  # its partial is gone: forgotten at start
        orphan.write_text('"v9"')

        second = await make_agent(upstream=server.upstream, cache_dir=cache_dir)
        assert not orphan.exists()
        report = await second.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "cached", report
        assert cached_bytes(second, IMAGE_A) == new
        resumed = [r for r in server.seen if r.method == "GET"][-1]
        assert (resumed.range, resumed.if_range) == (f"bytes={SIZE // 2}-", '"v1"'), server.seen
        assert not (cache_dir / "resume" / IMAGE_A).exists()  # gone with the partial


def test_a_kill_9_then_a_replaced_image_is_fetched_whole(tmp_path: Path) -> None:
    """A real agent process is killed mid-download; the image is replaced upstream before the
    restart: the validator kept on disk makes the restarted agent start over."""
    old, new = random_payload(SIZE, "old"), random_payload(SIZE, "new")
    server = VersionedServer()
    with server.running_in_thread():
        server.put(IMAGE_A, old, Behaviour(stall_first_after=SIZE // 2))
        agent = AgentProcess(
            cache_dir=tmp_path / "cache",
            upstream=server.upstream,
            extra_args=["--stall-timeout", "30", "--retry-backoff", "0.05"],
        )
        agent.start()
        try:
            client = AgentClient(agent.host, agent.port)
            assert client.queue(IMAGE_A).status == 202
            wait_until(
                lambda: client.state(IMAGE_A)["bytes"] >= SIZE // 2 or None,
                timeout=15,
                what="half the image on disk",
            )
            agent.kill()
            server.replace(IMAGE_A, new)
            server.release_stalls()
            agent.start()
            report = client.wait_for_state(IMAGE_A, {"cached", "failed"}, timeout=30)
            assert report["state"] == "cached", report
            assert (tmp_path / "cache" / "images" / IMAGE_A).read_bytes() == new
        finally:
            agent.kill()
    resumed = [r for r in server.seen if r.method == "GET"][-1]
    assert (resumed.range, resumed.if_range) == (f"bytes={SIZE // 2}-", '"v1"'), server.seen


async def test_without_validator_or_digest_a_download_starts_over(
    make_agent: AgentFactory,
) -> None:
    old, new = random_payload(SIZE, "old"), random_payload(SIZE, "new")
    behaviour = Behaviour(
        validators="none", stall_first_after=SIZE // 2, cut=True, replace_with=new
    )
    async with serving(VersionedServer()) as server:
        assert isinstance(server, VersionedServer)
        server.put(IMAGE_A, old, behaviour)
        agent = await make_agent(upstream=server.upstream)

        assert await agent.put(IMAGE_A) == 202
        await cut_once_half_is_kept(agent, server)
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "cached", report
        assert cached_bytes(agent, IMAGE_A) == new
        gets = [r for r in server.seen if r.method == "GET"]
        assert [r.range for r in gets] == [None, None], gets  # nothing could catch a splice


async def test_a_206_from_the_wrong_start_is_not_appended(make_agent: AgentFactory) -> None:
    data = random_payload(SIZE, "range")
    behaviour = Behaviour(stall_first_after=SIZE // 2, cut=True, wrong_range_start=True)
    async with serving(VersionedServer()) as server:
        assert isinstance(server, VersionedServer)
        server.put(IMAGE_A, data, behaviour)
        agent = await make_agent(upstream=server.upstream)

        assert await agent.put(IMAGE_A) == 202
        await cut_once_half_is_kept(agent, server)
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "cached", report
        assert cached_bytes(agent, IMAGE_A) == data
        gets = [r for r in server.seen if r.method == "GET"]
        assert [r.range for r in gets] == [None, f"bytes={SIZE // 2}-", None], gets


class CuttingFileUpstream(FileUpstream):
    """The real file upstream; the first read stops after one chunk, as a dropped connection
    would, and the file is replaced by another of the same size at that moment."""

    def __init__(self, directory: Path, replacement: bytes) -> None:
        super().__init__(directory, chunk_size=64 * KiB)
        self.replacement = replacement
        self.opens: list[tuple[int, int]] = []  # (offset asked, offset given)

    @asynccontextmanager
    async def _cut(self, image_id: str, offset: int, validator: str | None) -> AsyncIterator[Any]:
        async with super().open(image_id, offset, validator=validator) as stream:
            self.opens.append((offset, stream.offset))
            if len(self.opens) > 1:
                yield stream
                return

            async def first_chunk_only() -> AsyncIterator[bytes]:
                async for chunk in stream.chunks():
                    yield chunk
                    break
                fresh = self.directory / f".{image_id}.new"
                fresh.write_bytes(self.replacement)
                fresh.replace(self.directory / image_id)
                raise TransientUpstreamError("read cut", reason="connection")

            yield ChunkStream(stream.offset, first_chunk_only, stream.validator)

    def open(  # type: ignore[override]
        self, image_id: str, offset: int, *, validator: str | None = None
    ) -> Any:
        return self._cut(image_id, offset, validator)


async def test_a_file_replaced_between_attempts_is_read_again_from_the_start(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    old, new = random_payload(SIZE, "old"), random_payload(SIZE, "new")
    write_file_image(upstream_dir, IMAGE_A, old, sidecar=False)
    source = CuttingFileUpstream(upstream_dir, new)
    agent = await make_agent(source=source)
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    assert cached_bytes(agent, IMAGE_A) == new
    assert source.opens == [(0, 0), (64 * KiB, 0)], source.opens  # asked to resume, refused


# --- 3. every download ends --------------------------------------------------------------------


class NestedLater(FakeGlance):
    """A Glance whose image document turns into deeply nested JSON after the first answer."""

    def __init__(self) -> None:
        super().__init__()
        self.documents = 0

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        self.documents += 1
        if self.documents == 1:
            return await super()._metadata(request)
        self._record(request)
        return web.Response(body=NESTED, content_type="application/json")


async def test_nested_metadata_json_fails_the_download_with_a_reason(
    make_agent: AgentFactory,
) -> None:
    """The PUT's document is fine; the retry's (after a 503) is nested 100 000 deep."""
    async with serving(NestedLater()) as server:
        server.add(IMAGE_A, random_payload(SIZE, "nested"))
        server.faults[IMAGE_A] = Faults(fail_times=1)
        agent = await make_agent(upstream=server.upstream, retries=3)

        assert await agent.put(IMAGE_A) == 202
        report = await agent.wait_for(IMAGE_A, "cached", "failed")
        assert report["state"] == "failed", report
        assert "nested deeper than 32 levels" in report["error"], report

        async with agent.client.get(f"/v2/images/{IMAGE_A}") as response:
            body = await response.json()
            assert response.status in (502, 503), body
            assert "nested deeper than 32 levels" in body["message"], body


class Exploding:
    """An upstream whose bytes raise what no layer expects (a bug, not an upstream error)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def metadata(self, image_id: str) -> ImageMeta:
        return ImageMeta(size=1000)

    def open(self, image_id: str, offset: int, *, validator: str | None = None) -> Any:
        raise self.error

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("error", [RecursionError("deep"), KeyError("size")], ids=repr)
async def test_an_unexpected_exception_ends_the_download(
    error: BaseException, make_agent: AgentFactory
) -> None:
    agent = await make_agent(source=Exploding(error))
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "failed", "cached")
    assert report["state"] == "failed", report
    assert f"internal error: {type(error).__name__}" in report["error"], report
    # A new PUT is a fresh attempt (which ends the same way), never a no-op.
    assert await agent.put(IMAGE_A) == 202
    again = await agent.wait_for(IMAGE_A, "failed", "cached")
    assert again["attempts"] == 1 and again["state"] == "failed", again


async def test_a_caching_record_no_download_owns_is_recovered_by_a_put(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    data = random_payload(SIZE, "stale")
    write_file_image(upstream_dir, IMAGE_A, data)
    agent = await make_agent()
    assert await agent.put(IMAGE_A) == 202
    cached = await agent.wait_for(IMAGE_A, "cached")
    await eventually(lambda: not agent.cache.pool.running)  # the download has ended
    # However it came about, a record left "caching" with no download behind it:
    records = agent.cache.records
    records[IMAGE_A] = replace(records[IMAGE_A], state="caching", bytes=0, cached_at=None)
    (agent.cache_dir / "images" / IMAGE_A).unlink()
    assert (await agent.report(IMAGE_A))["state"] == "caching"

    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    assert report["cached_at"] >= cached["cached_at"]
    assert cached_bytes(agent, IMAGE_A) == data


async def test_a_nested_sidecar_answers_a_clean_error(
    make_agent: AgentFactory, upstream_dir: Path
) -> None:
    write_file_image(upstream_dir, IMAGE_A, random_payload(SIZE, "sidecar"))
    (upstream_dir / f"{IMAGE_A}.json").write_bytes(NESTED)
    agent = await make_agent()

    async with agent.client.get(f"/v2/images/{IMAGE_A}") as response:
        body = await response.json()
        assert response.status == 502, body
        assert f"sidecar {IMAGE_A}.json is nested deeper" in body["message"], body
    # the listing leaves out the one image it cannot describe, and answers for the rest
    async with agent.client.get("/v2/images") as response:
        assert response.status == 200
        assert IMAGE_A not in [doc["id"] for doc in (await response.json())["images"]]
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "failed", "cached")
    assert "nested deeper than 32 levels" in report["error"], report


async def test_a_nested_seal_is_no_seal_and_the_agent_starts(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    """The agent's own JSON files are not trusted as found either (here a seal nested 2 000
    deep, under the seal's 4 KiB bound): no seal, so the image is not adopted."""
    cache_dir = tmp_path / "found"
    (cache_dir / "images").mkdir(parents=True)
    (cache_dir / "seals").mkdir()
    (cache_dir / "images" / IMAGE_A).write_bytes(b"x" * 100)
    (cache_dir / "seals" / f"{IMAGE_A}.json").write_bytes(b"[" * 2000 + b"]" * 2000)
    agent = await make_agent(cache_dir=cache_dir)
    assert (await agent.listing())["cached_images"] == []
    assert not (cache_dir / "images" / IMAGE_A).exists()


# --- 5. ids never reach another upstream path --------------------------------------------------

ESCAPES = [
    ("GET", "/v2/images/..%2F..%2Fidentity%2Fv3%2Fusers"),
    ("GET", "/v2/images/..%2F..%2Fidentity%2Fv3%2Fusers/file"),
    ("GET", f"/v2/images/{IMAGE_A}%3Fvisibility=all"),
    ("GET", f"/v2/images/{IMAGE_A}%3F/file"),
    ("GET", f"/v2/images/{IMAGE_A}%23x"),
    ("PUT", "/v2/cache/..%2F..%2Fidentity%2Fv3%2Fusers"),
    ("PUT", f"/v2/cache/{IMAGE_A}%3Fx=1"),
]


@pytest.mark.parametrize(("method", "target"), ESCAPES)
async def test_an_id_never_reaches_another_upstream_path(
    method: str, target: str, make_agent: AgentFactory, tmp_path: Path
) -> None:
    async with serving(RecordingGlance(token="upstream-secret")) as server:
        assert isinstance(server, RecordingGlance)
        server.add(IMAGE_A, random_payload(KiB, "escape"))
        token_file = tmp_path / "upstream-token"
        token_file.write_text("upstream-secret\n")
        agent = await make_agent(upstream=server.upstream, upstream_token_file=token_file)

        reply = await raw(agent, method, target)
        assert reply.status == 404, (reply.status, reply.body[:200])
        assert b"admin" not in reply.body
        assert server.requests == [], server.requests


@pytest.mark.parametrize(
    "target", ["/v2/images/..%2Fsecret", "/v2/images/a%3Fb", "/v2/images/..%2Fsecret/file"]
)
async def test_an_id_never_reaches_another_path_of_an_http_upstream(
    target: str, make_agent: AgentFactory
) -> None:
    async with serving(HttpFileServer()) as server:
        agent = await make_agent(upstream=server.upstream)
        reply = await raw(agent, "GET", target)
        assert reply.status == 404, reply
        assert server.requests == []
