"""Which digests a download computes, and what its seal records (issue 16, item 8).

Covers: only the digests the upstream gives are computed and verified — md5 for Glance's
``checksum``, the ``os_hash_algo`` for ``os_hash_value`` — and an image without any is sealed
with sha256; the seal names its algorithm, and ``Content-MD5``/the cached entry's checksum come
only from a verified md5; a wrong digest of either kind still fails the image; after the
database is lost, an image sealed with sha256 whose identity changed is re-hashed with sha256:
kept when intact, rejected when its bytes changed; a resumed download re-hashes its partial file
with both digests and seals both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import IMAGE_A, AgentFactory, random_payload
from tests.support.upstreams import FakeGlance, Faults, write_file_image

DATA = random_payload(200_000, "digests")
MD5 = hashlib.md5(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()


def seal_of(cache_dir: Path, image_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((cache_dir / "seals" / f"{image_id}.json").read_text())
    return doc


@pytest.mark.parametrize(
    ("fields", "algo", "digest", "md5"),
    [
        pytest.param({"os_hash_algo": None, "os_hash_value": None}, "md5", MD5, MD5, id="md5"),
        pytest.param({"checksum": None}, "sha512", SHA512, None, id="os_hash-only"),
        pytest.param({}, "sha512", SHA512, MD5, id="both"),
        pytest.param(
            {"checksum": None, "os_hash_algo": None, "os_hash_value": None},
            "sha256",
            SHA256,
            None,
            id="none",
        ),
        pytest.param(
            {"checksum": None, "os_hash_algo": "sha256", "os_hash_value": SHA256},
            "sha256",
            SHA256,
            None,
            id="sha256",
        ),
    ],
)
async def test_seal_records_the_digest_that_was_verified(
    make_agent: AgentFactory,
    upstream_dir: Path,
    fields: dict[str, Any],
    algo: str,
    digest: str,
    md5: str | None,
) -> None:
    write_file_image(upstream_dir, IMAGE_A, DATA, **fields)
    agent = await make_agent()
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    seal = seal_of(agent.cache_dir, IMAGE_A)
    assert (seal["algo"], seal["digest"], seal["md5"]) == (algo, digest, md5)
    async with agent.client.get(f"/v2/images/{IMAGE_A}/file") as response:
        assert await response.read() == DATA
        assert response.headers.get("Content-MD5") == md5
    [entry] = (await agent.listing())["cached_images"]
    assert entry.get("checksum") == md5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"checksum": "0" * 32, "os_hash_value": None}, "checksum mismatch", id="md5"),
        pytest.param({"checksum": None, "os_hash_value": "0" * 128}, "os_hash mismatch", id="sha"),
    ],
)
async def test_a_wrong_digest_of_either_kind_fails_the_image(
    make_agent: AgentFactory, upstream_dir: Path, fields: dict[str, Any], message: str
) -> None:
    write_file_image(upstream_dir, IMAGE_A, DATA, **fields)
    agent = await make_agent()
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "failed" and message in report["error"], report


@pytest.mark.parametrize("tampered", [False, True], ids=["touched", "overwritten"])
async def test_sha256_seal_is_rehashed_with_sha256_after_the_database_is_lost(
    make_agent: AgentFactory, upstream_dir: Path, tmp_path: Path, tampered: bool
) -> None:
    write_file_image(
        upstream_dir, IMAGE_A, DATA, checksum=None, os_hash_algo=None, os_hash_value=None
    )
    cache_dir = tmp_path / "shared-cache"
    agent = await make_agent(cache_dir=cache_dir)
    assert await agent.put(IMAGE_A) == 202
    await agent.wait_for(IMAGE_A, "cached")
    await agent.client.close()
    for name in ("imagecache.db", "imagecache.db-wal", "imagecache.db-shm"):
        (cache_dir / name).unlink(missing_ok=True)
    image = cache_dir / "images" / IMAGE_A
    if tampered:  # same size, other bytes, new identity
        image.unlink()
        image.write_bytes(bytes(len(DATA)))
    else:  # same bytes, new mtime: only a re-hash can tell
        os.utime(image, ns=(1, 1))
    again = await make_agent(cache_dir=cache_dir)
    report = await again.report(IMAGE_A)
    if tampered:
        assert report["state"] == "absent", report
        assert (cache_dir / "invalid" / IMAGE_A).exists()
    else:
        assert report["state"] == "cached", report
        async with again.client.get(f"/v2/images/{IMAGE_A}/file") as response:
            assert await response.read() == DATA


async def test_a_resume_rehashes_the_partial_with_every_digest(
    make_agent: AgentFactory, glance_upstream: FakeGlance, tmp_path: Path
) -> None:
    data = random_payload(3_000_000, "resume")
    glance_upstream.add(IMAGE_A, data)
    glance_upstream.faults[IMAGE_A] = Faults(drop_after=1_200_000, drop_times=1)
    token = tmp_path / "upstream-token"
    token.write_text("upstream-secret\n")
    agent = await make_agent(glance_upstream.upstream, upstream_token_file=token)
    assert await agent.put(IMAGE_A) == 202
    report = await agent.wait_for(IMAGE_A, "cached", "failed")
    assert report["state"] == "cached", report
    ranges = [s.range for s in glance_upstream.requests if s.method == "GET" and s.range]
    assert ranges and ranges[0] != "bytes=0-", "the second attempt resumed"
    seal = seal_of(agent.cache_dir, IMAGE_A)
    assert (seal["algo"], seal["digest"], seal["md5"]) == (
        "sha512",
        hashlib.sha512(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
    )
