"""Pure logic behind the OpenStack-native agent (SPEC §2.8); the real services are exercised in
tests/openstack/.

Covers: Glance's listing over file-upstream documents (filters, sort, limit/marker paging, the
``first``/``next`` links, 400s), a file image's document from its sidecar, the Keystone verdict
(roles, expiry, the five-minute cap) and its bounded cache, `Keystone.check` sharing one
validation per token, caching only acceptances and bounding validations in flight (with the
validation itself replaced; the real one is in tests/openstack/test_agent_keystone.py),
prune's choice of victims, and clean's choice of files.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from imagecache.agent.cache.maintenance import clean_directory, prune_victims
from imagecache.agent.keystone import (
    MAX_PENDING_CHECKS,
    MAX_VERDICT_AGE,
    Keystone,
    KeystoneError,
    Verdict,
    VerdictCache,
    judge,
    strip_version,
)
from imagecache.agent.upstream.index import InvalidQuery, file_image, list_images
from imagecache.core.eviction import Candidate


def _docs() -> list[dict[str, object]]:
    return [
        file_image("a", size=10, modified=100.0, sidecar={"name": "ubuntu"}),
        file_image("b", size=30, modified=300.0, sidecar={"name": "cirros", "status": "queued"}),
        file_image(
            "c", size=20, modified=200.0, sidecar={"name": "ubuntu", "disk_format": "qcow2"}
        ),
    ]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        pytest.param([], ["b", "c", "a"], id="default-created-desc"),
        pytest.param([("name", "ubuntu")], ["c", "a"], id="name"),
        pytest.param([("id", "a")], ["a"], id="id"),
        pytest.param([("id", "in:a,b")], ["b", "a"], id="id-in"),
        pytest.param([("status", "active")], ["c", "a"], id="status"),
        pytest.param([("disk_format", "qcow2")], ["c"], id="property"),
        pytest.param([("size_min", "15")], ["b", "c"], id="size-min"),
        pytest.param([("sort_key", "size"), ("sort_dir", "asc")], ["a", "c", "b"], id="sort-size"),
        pytest.param([("name", "nope")], [], id="no-match"),
    ],
)
def test_listing_filters_and_sorts(query: list[tuple[str, str]], ids: list[str]) -> None:
    body = list_images(_docs(), query)
    assert [d["id"] for d in body["images"]] == ids
    assert body["schema"] == "/v2/schemas/images"


def test_listing_pages_with_limit_and_marker() -> None:
    first = list_images(_docs(), [("limit", "2")])
    assert [d["id"] for d in first["images"]] == ["b", "c"]
    assert first["first"] == "/v2/images?limit=2"
    assert first["next"] == "/v2/images?limit=2&marker=c"
    second = list_images(_docs(), [("limit", "2"), ("marker", "c")])
    assert [d["id"] for d in second["images"]] == ["a"]
    assert "next" not in second  # a page that is not full is the last one
    assert second["first"] == "/v2/images?limit=2"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param([("limit", "x")], id="limit-not-int"),
        pytest.param([("limit", "-1")], id="limit-negative"),
        pytest.param([("marker", "zzz")], id="unknown-marker"),
        pytest.param([("sort_key", "owner_secret")], id="bad-sort-key"),
        pytest.param([("sort_dir", "up")], id="bad-sort-dir"),
    ],
)
def test_listing_refuses_bad_queries(query: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidQuery):
        list_images(_docs(), query)


def test_file_image_document_takes_the_sidecar() -> None:
    doc = file_image(
        "img",
        size=5,
        modified=0.0,
        sidecar={
            "name": "n",
            "checksum": "c" * 32,
            "os_hash_algo": "sha512",
            "size": 99,
            "container_format": "ova",
            "hw_disk_bus": "scsi",
        },
    )
    assert doc["name"] == "n" and doc["checksum"] == "c" * 32 and doc["os_hash_algo"] == "sha512"
    assert doc["size"] == 5  # the file's size, never the sidecar's
    assert doc["container_format"] == "ova" and doc["disk_format"] == "raw"
    assert doc["hw_disk_bus"] == "scsi"
    assert doc["created_at"] == "1970-01-01T00:00:00Z"
    assert (doc["self"], doc["file"]) == ("/v2/images/img", "/v2/images/img/file")


@pytest.mark.parametrize(
    ("roles", "expires_at", "outcome", "until"),
    [
        pytest.param({"admin"}, 1000.0 + 60, "allowed", 1060.0, id="admin-until-expiry"),
        pytest.param(
            {"admin", "member"},
            1000.0 + 3600,
            "allowed",
            1000.0 + MAX_VERDICT_AGE,
            id="capped-at-five-minutes",
        ),
        pytest.param(
            {"member", "reader"}, 5000.0, "forbidden", 1000.0 + MAX_VERDICT_AGE, id="no-role"
        ),
        pytest.param({"admin"}, 999.0, "invalid", 1000.0, id="expired"),
    ],
)
def test_judge(roles: set[str], expires_at: float, outcome: str, until: float) -> None:
    verdict = judge(
        expires_at=expires_at, roles=frozenset(roles), required=frozenset({"admin"}), now=1000.0
    )
    assert verdict == Verdict(outcome, until)  # type: ignore[arg-type]


def test_verdict_cache_expires_and_stays_bounded() -> None:
    cache = VerdictCache(max_entries=2)
    cache.put("t1", Verdict("allowed", 100.0))
    assert cache.get("t1", now=99.0) == Verdict("allowed", 100.0)
    assert cache.get("t1", now=100.0) is None  # expired entries are dropped
    assert len(cache) == 0
    for token in ("t1", "t2", "t3"):
        cache.put(token, Verdict("forbidden", 500.0))
    assert len(cache) == 2 and cache.get("t1", now=0.0) is None
    assert "t2" not in repr(cache._entries)  # keyed by digest, never the token itself


@pytest.mark.parametrize(
    ("endpoint", "base"),
    [
        ("http://glance:9292", "http://glance:9292"),
        ("http://glance:9292/", "http://glance:9292"),
        ("http://glance:9292/v2", "http://glance:9292"),
        ("https://x/image/v2.0/", "https://x/image"),
    ],
)
def test_strip_version(endpoint: str, base: str) -> None:
    assert strip_version(endpoint) == base


def test_prune_victims_lru_first_and_never_pinned() -> None:
    cached = [Candidate("old", 40, 1.0), Candidate("mid", 40, 2.0), Candidate("new", 40, 3.0)]
    assert prune_victims(cached=cached, pinned=set(), used=120, max_size=200) == []
    assert prune_victims(cached=cached, pinned=set(), used=120, max_size=80) == ["old"]
    assert prune_victims(cached=cached, pinned={"old"}, used=120, max_size=80) == ["mid"]
    # Served images keep the cache over the limit: everything else goes.
    assert prune_victims(cached=cached, pinned={"old", "mid"}, used=120, max_size=10) == ["new"]


def test_clean_directory_keeps_live_and_recent_partials(tmp_path: Path) -> None:
    invalid, incomplete = tmp_path / "invalid", tmp_path / "incomplete"
    invalid.mkdir()
    incomplete.mkdir()
    (invalid / "bad").write_bytes(b"x")
    for name in ("live", "stalled", "recent"):
        (incomplete / name).write_bytes(b"x")
    os.utime(incomplete / "live", (10.0, 10.0))
    os.utime(incomplete / "stalled", (10.0, 10.0))
    os.utime(incomplete / "recent", (1000.0, 1000.0))
    removed = clean_directory(
        invalid=invalid, incomplete=incomplete, live={"live"}, stalled_before=500.0
    )
    assert removed == 2
    assert sorted(p.name for p in incomplete.iterdir()) == ["live", "recent"]
    assert list(invalid.iterdir()) == []


class CountingKeystone(Keystone):
    """`Keystone.check`'s caching around a validation that waits for the test to release it."""

    def __init__(self) -> None:
        super().__init__(None, required_roles=frozenset({"admin"}), clock=lambda: 1000.0)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def _validate(self, token: str) -> Verdict:
        self.calls.append(token)
        await self.release.wait()
        verdict = Verdict("allowed" if token.startswith("good") else "invalid", 1100.0)
        if verdict.outcome == "allowed":
            self.verdicts.put(token, verdict)
        return verdict


async def test_check_shares_one_validation_and_caches_it() -> None:
    keystone = CountingKeystone()
    waiting = [asyncio.ensure_future(keystone.check("good-token")) for _ in range(5)]
    await asyncio.sleep(0)
    keystone.release.set()
    assert await asyncio.gather(*waiting) == ["allowed"] * 5
    assert await keystone.check("good-token") == "allowed"  # from the cache
    assert keystone.calls == ["good-token"]
    assert await keystone.check("bad-token") == "invalid"
    assert await keystone.check("bad-token") == "invalid"
    assert keystone.calls == ["good-token", "bad-token", "bad-token"]  # refusals not cached


async def test_check_bounds_validations_in_flight() -> None:
    keystone = CountingKeystone()
    waiting = [
        asyncio.ensure_future(keystone.check(f"bogus-{n}")) for n in range(MAX_PENDING_CHECKS)
    ]
    await asyncio.sleep(0)
    with pytest.raises(KeystoneError):
        await keystone.check("one-more")
    keystone.release.set()
    assert set(await asyncio.gather(*waiting)) == {"invalid"}
    assert len(keystone.calls) == MAX_PENDING_CHECKS
