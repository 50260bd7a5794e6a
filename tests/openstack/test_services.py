"""The OpenStack fixtures are the real services, answering as Keystone and Glance do.

Covers: a Keystone token from the stock `openstack` CLI with the fixture's clouds.yaml (password
and application-credential clouds) that Keystone itself validates; the image service in the
catalog at the Glance URL; the uploaded test images listed by the CLI and downloaded with
identical bytes; Glance's own cache API answering an admin token (200) and refusing a
member-only token (403) and a bogus one (401); the short-token cloud's tokens expiring within
its configured lifetime; Glance reporting API v2.18 (so it is Glance 33) and really caching an
image queued through its cache API.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.openstack.cloud import OpenStackCloud
from tests.openstack.conftest import SHORT_TOKEN_EXPIRATION


def http_get(url: str, *, headers: dict[str, str], method: str = "GET") -> tuple[int, Any]:
    """Send `method` to `url`; the status and the JSON body (or None when it is not JSON)."""
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@pytest.mark.parametrize("cloud_name", ["admin", "demo", "appcred"])
def test_cli_token_is_validated_by_keystone(
    openstack_cloud: OpenStackCloud, cloud_name: str
) -> None:
    token = openstack_cloud.issue_token(cloud_name)
    admin_token = openstack_cloud.issue_token("admin")
    status, body = http_get(
        f"{openstack_cloud.keystone_url}/auth/tokens",
        headers={"X-Auth-Token": admin_token, "X-Subject-Token": token},
    )
    assert status == 200
    roles = {role["name"] for role in body["token"]["roles"]}
    assert ("admin" in roles) == (cloud_name != "demo")
    assert "member" in roles


def test_catalog_points_the_image_service_at_glance(openstack_cloud: OpenStackCloud) -> None:
    endpoints = json.loads(
        openstack_cloud.openstack("endpoint", "list", "--service", "image", "-f", "json")
    )
    assert sorted(e["Interface"] for e in endpoints) == ["admin", "internal", "public"]
    assert {e["URL"] for e in endpoints} == {openstack_cloud.glance_url}
    assert {e["Region"] for e in endpoints} == {openstack_cloud.region}


@pytest.mark.parametrize("cloud_name", ["admin", "demo"])
def test_cli_lists_the_uploaded_images(openstack_cloud: OpenStackCloud, cloud_name: str) -> None:
    listed = json.loads(openstack_cloud.openstack("image", "list", "-f", "json", cloud=cloud_name))
    assert {(i["ID"], i["Name"], i["Status"]) for i in listed} == {
        (image.id, image.name, "active") for image in openstack_cloud.images
    }


def test_cli_saves_identical_bytes(openstack_cloud: OpenStackCloud, tmp_path: Path) -> None:
    image = openstack_cloud.image("imagecache-test-small")
    target = tmp_path / "saved.raw"
    openstack_cloud.openstack("image", "save", "--file", str(target), image.id, cloud="demo")
    assert target.read_bytes() == image.data


def test_glance_cache_api_answers_an_admin(openstack_cloud: OpenStackCloud) -> None:
    token = openstack_cloud.issue_token("admin")
    status, body = http_get(
        f"{openstack_cloud.glance_url}/v2/cache", headers={"X-Auth-Token": token}
    )
    assert status == 200
    assert set(body) == {"cached_images", "queued_images"}


@pytest.mark.parametrize(
    ("cloud_name", "expected"),
    [pytest.param("demo", 403, id="member-only"), pytest.param(None, 401, id="bogus-token")],
)
def test_glance_cache_api_refuses(
    openstack_cloud: OpenStackCloud, cloud_name: str | None, expected: int
) -> None:
    token = openstack_cloud.issue_token(cloud_name) if cloud_name else "not-a-token"
    status, _ = http_get(f"{openstack_cloud.glance_url}/v2/cache", headers={"X-Auth-Token": token})
    assert status == expected


def test_short_token_cloud_issues_short_tokens(
    openstack_cloud_short_tokens: OpenStackCloud,
) -> None:
    cloud = openstack_cloud_short_tokens
    before = datetime.now(UTC)
    answer = json.loads(cloud.openstack("token", "issue", "-f", "json"))
    after = datetime.now(UTC)
    expires = datetime.fromisoformat(answer["expires"].replace("Z", "+00:00"))
    # Issued between `before` and `after`; Keystone states the expiry to the second.
    assert (expires - after).total_seconds() <= SHORT_TOKEN_EXPIRATION + 1
    assert (expires - before).total_seconds() >= SHORT_TOKEN_EXPIRATION - 1
    status, _ = http_get(f"{cloud.glance_url}/v2/images", headers={"X-Auth-Token": answer["id"]})
    assert status == 200


def test_glance_is_33_with_api_up_to_v2_18(openstack_cloud: OpenStackCloud) -> None:
    status, body = http_get(f"{openstack_cloud.glance_url}/versions", headers={})
    assert status == 200
    current = [v["id"] for v in body["versions"] if v["status"] == "CURRENT"]
    assert current == ["v2.18"]


def test_glance_caches_a_queued_image(openstack_cloud: OpenStackCloud) -> None:
    image = openstack_cloud.image("imagecache-test-medium")
    headers = {"X-Auth-Token": openstack_cloud.issue_token("admin")}
    cache = f"{openstack_cloud.glance_url}/v2/cache"
    status, _ = http_get(f"{cache}/{image.id}", headers=headers, method="PUT")
    assert status == 202
    deadline = time.monotonic() + 60
    cached: list[str] = []
    while time.monotonic() < deadline:
        _, body = http_get(cache, headers=headers)
        cached = [entry["image_id"] for entry in body["cached_images"]]
        if image.id in cached:
            break
        time.sleep(0.2)
    assert image.id in cached, f"Glance did not cache {image.id} within 60 s: {body}"
    status, _ = http_get(f"{cache}/{image.id}", headers=headers, method="DELETE")
    assert status == 204
    _, body = http_get(cache, headers=headers)
    assert image.id not in [entry["image_id"] for entry in body["cached_images"]]
