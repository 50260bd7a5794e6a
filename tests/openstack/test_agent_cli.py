"""The stock OpenStack clients against one agent in front of a real Glance 33 (SPEC §2.8).

The agent: upstream ``glance://`` (image endpoint from Keystone's catalog), the `appcred`
application credential as its own identity, Keystone-mode inbound auth. The clients: the stock
``openstack`` CLI (python-openstackclient) with a clouds.yaml whose ``image_endpoint_override``
is the agent's bare URL (password auth, the admin user), and ``glance`` (python-glanceclient)
with an admin token.

Covers: ``cached image queue`` by name and by id, ``cached image list``, ``image show``,
``image save`` with identical bytes (read through when not cached, then cached), ``cached image
delete`` by name, ``cached image clear``, ``image list``; ``glance image-show``.
Run with ``-s`` to see each command and its answer.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openstack.agent_cloud import (
    Cli,
    Transcript,
    client_clouds,
    running_agent,
    wait_cached,
)
from tests.openstack.cloud import OpenStackCloud
from tests.support.agents import AgentProcess


@pytest.fixture(scope="module")
def agent(
    openstack_cloud: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    with running_agent(openstack_cloud, tmp_path_factory.mktemp("cli-agent")) as process:
        yield process


@pytest.fixture
def cli(openstack_cloud: OpenStackCloud, agent: AgentProcess, tmp_path: Path) -> Cli:
    clouds = client_clouds(openstack_cloud, tmp_path / "clouds.yaml", {"agent": agent.url})
    return Cli(openstack_cloud, clouds, "agent", Transcript())


def cached_ids(cli: Cli) -> set[str]:
    return {row["ID"] for row in cli.json("cached", "image", "list")}


def test_openstack_cli_drives_one_agent(
    openstack_cloud: OpenStackCloud, agent: AgentProcess, cli: Cli, tmp_path: Path
) -> None:
    small = openstack_cloud.image("imagecache-test-small")
    medium = openstack_cloud.image("imagecache-test-medium")
    large = openstack_cloud.image("imagecache-test-large")
    cli("cached", "image", "clear")
    assert cached_ids(cli) == set()

    cli("cached", "image", "queue", small.name)  # by name: GET /v2/images/<name>, then ?name=
    cli("cached", "image", "queue", medium.id)  # by id
    for image in (small, medium):
        report = wait_cached(agent, image.id)
        assert report["size"] == image.size
    listed = cli.json("cached", "image", "list")
    assert {row["ID"] for row in listed} == {small.id, medium.id}
    assert {row["State"] for row in listed} == {"cached"}

    shown = cli.json("image", "show", large.id)
    assert (shown["id"], shown["name"], shown["size"]) == (large.id, large.name, large.size)
    assert shown["checksum"] == large.checksum and shown["status"] == "active"

    saved = tmp_path / "large.raw"
    cli("image", "save", "--file", str(saved), large.id)  # not cached: streamed through
    assert saved.read_bytes() == large.data
    wait_cached(agent, large.id)  # ...and queued on the way (cache_on_read)
    again = tmp_path / "large-again.raw"
    cli("image", "save", "--file", str(again), large.name)  # by name, now from the cache
    assert hashlib.sha512(again.read_bytes()).hexdigest() == large.os_hash_value

    cli("cached", "image", "delete", small.name)
    assert cached_ids(cli) == {medium.id, large.id}
    cli("cached", "image", "clear")
    assert cached_ids(cli) == set()

    names = {row["Name"] for row in cli.json("image", "list")}
    assert {small.name, medium.name, large.name} <= names


def test_glance_cli_shows_an_image_through_the_agent(
    openstack_cloud: OpenStackCloud, agent: AgentProcess
) -> None:
    image = openstack_cloud.image("imagecache-test-medium")
    token = openstack_cloud.issue_token("admin")
    glance = Path(sys.executable).with_name("glance")
    done = subprocess.run(
        [str(glance), "--os-image-url", agent.url, "--os-auth-token", token,
         "image-show", image.id],
        capture_output=True, text=True, timeout=60, check=False,
        env={**openstack_cloud.base_env, "HOME": str(agent.cache_dir.parent)},
    )  # fmt: skip
    Transcript().record(f"$ glance --os-image-url {agent.url} image-show {image.id}", done.stdout)
    assert done.returncode == 0, done.stderr
    rows = dict(
        (cells[1].strip(), cells[2].strip())
        for line in done.stdout.splitlines()
        if (cells := line.split("|")) and len(cells) == 4
    )
    assert rows["id"] == image.id and rows["name"] == image.name
    assert rows["checksum"] == image.checksum and rows["size"] == str(image.size)
    assert json.dumps(rows)  # plain strings only
