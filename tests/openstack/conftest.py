"""Session fixtures: a real Keystone 30 and Glance 33 on loopback, for the OpenStack tests.

- `openstack_venv`: the venv built by `.ci/openstack-venv.sh` (outside the repository; built at
  collection time, before any test's timeout starts, only when a selected test needs it). When
  it cannot be built, the tests that need it fail under CI (`CI=true`) and are skipped otherwise,
  with the build's output as the reason.
- `openstack_cloud`: Keystone + Glance with hour-long tokens (see tests/openstack/cloud.py for
  the users, projects, images and the clouds in its `clouds.yaml`).
- `openstack_cloud_short_tokens`: a second, separate pair whose Keystone issues tokens that
  live `SHORT_TOKEN_EXPIRATION` seconds, so a test can see a token expire in half a minute.
  That is under keystoneauth's 120 s re-authentication margin: a keystoneauth client (the
  agent, Glance's middleware) takes a fresh token whenever it needs one, and a token it got
  before is expired by the time the next one is needed, which is the renewal a test checks.
Each is started once per session on first use (about 30-40 s on 2 cores) and stopped, with its
temporary directory removed, at the end. The first test that uses one gets a longer timeout.

Starting a real agent against a cloud: `running_agent(cloud, workdir, os_cloud="appcred")` in
tests/openstack/agent_cloud.py, an `AgentProcess` (tests/support/agents.py) whose environment
points it at a cloud of this clouds.yaml (`OS_CLIENT_CONFIG_FILE`, `IMAGECACHE_OS_CLOUD`), with
upstream `glance://` (the image endpoint from the catalog) unless told otherwise.

Keystone-mode inbound auth (`IMAGECACHE_AUTH=keystone` or the agent's flag) is the agent's
setting; `openstack_cloud.issue_token("admin" | "demo")` gives an admin and a member-only token.
The stock CLI: `openstack_cloud.openstack("image", "list", cloud="demo")`, or run
`openstack_cloud.venv.bin("openstack")` with `openstack_cloud.env()` and a clouds.yaml of
your own (e.g. one with `image_endpoint_override` set to the agent's URL, without `/v2`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openstack.cloud import OpenStackCloud, running_openstack
from tests.openstack.venv import OpenStackVenv, VenvUnavailable, build_venv

SHORT_TOKEN_EXPIRATION = 30  # seconds; a test waits this long to see a token expire
CLOUD_FIXTURES = ("openstack_cloud", "openstack_cloud_short_tokens")
STARTUP_TIMEOUT = 400  # seconds for the first test of a cloud, which also pays for its start
VENV_RESULT = pytest.StashKey[OpenStackVenv | str]()
UNGROUPED = pytest.StashKey[str]()


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test here in one pytest-xdist group (``--dist loadgroup``): one worker runs them
    all, so each session cloud starts once, not once per worker."""
    item.add_marker(pytest.mark.xdist_group("openstack"))


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: build only for selected tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the venv before the tests run (outside any test's timeout) if a test needs it."""
    users = [item for item in items if "openstack_venv" in getattr(item, "fixturenames", ())]
    if not users:
        return
    # A pytest-xdist worker under --dist loadgroup: the group must show in the node ids, else
    # every worker would start its own clouds (pytest-xdist#1386: so it is on pytest 9.2).
    if getattr(config.option, "loadgroup", False) and not all(
        item.nodeid.endswith("@openstack") for item in users
    ):
        config.stash[UNGROUPED] = (
            "pytest-xdist did not group tests/openstack (--dist loadgroup), so each worker "
            "would start its own Keystone and Glance: install the pytest pyproject.toml allows"
        )
    try:
        config.stash[VENV_RESULT] = build_venv()
    except VenvUnavailable as error:
        config.stash[VENV_RESULT] = str(error)
    for fixture in CLOUD_FIXTURES:
        first = next((item for item in users if fixture in getattr(item, "fixturenames", ())), None)
        if first is None:
            continue
        marker = first.get_closest_marker("timeout")
        if marker is None or (marker.args and float(marker.args[0]) < STARTUP_TIMEOUT):
            first.add_marker(pytest.mark.timeout(STARTUP_TIMEOUT))


@pytest.fixture(scope="session")
def openstack_venv(request: pytest.FixtureRequest) -> OpenStackVenv:
    if UNGROUPED in request.config.stash:
        pytest.fail(request.config.stash[UNGROUPED])
    result = request.config.stash.get(VENV_RESULT, "the venv was not built at collection")
    if isinstance(result, OpenStackVenv):
        return result
    reason = f"no OpenStack venv (Keystone and Glance from PyPI): {result}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def started_cloud(venv: OpenStackVenv, *, token_expiration: int) -> Iterator[OpenStackCloud]:
    workdir = tempfile.mkdtemp(prefix="imagecache-openstack-")
    try:
        with running_openstack(venv, Path(workdir), token_expiration=token_expiration) as cloud:
            yield cloud
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def openstack_cloud(openstack_venv: OpenStackVenv) -> Iterator[OpenStackCloud]:
    yield from started_cloud(openstack_venv, token_expiration=3600)


@pytest.fixture(scope="session")
def openstack_cloud_short_tokens(openstack_venv: OpenStackVenv) -> Iterator[OpenStackCloud]:
    yield from started_cloud(openstack_venv, token_expiration=SHORT_TOKEN_EXPIRATION)
