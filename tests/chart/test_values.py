"""values.yaml and values.schema.json: defaults documented, typos and bad values refused.

Covers: every key of values.yaml carries a comment (cert-manager style); every schema property
has a description and every object in the schema is closed (additionalProperties false); bad
values — a typo at any depth, a bad enum, an out-of-range port, a bad URL — are refused by the
schema with a message naming the key; rules the schema cannot express fail rendering clearly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, template_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()


def schema_objects(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema with declared properties, with its dotted path."""
    if "properties" in node:
        yield path, node
        for key, child in node["properties"].items():
            yield from schema_objects(child, f"{path}.{key}" if path else key)


def keyed_lines() -> Iterator[tuple[int, str, list[str]]]:
    """(line number, dotted path, comment lines just above) for each key line of values.yaml."""
    stack: list[tuple[int, str]] = []
    comments: list[str] = []
    for number, line in enumerate(VALUES_TEXT.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if ":" in stripped and not stripped.startswith("-"):
            key = stripped.split(":", 1)[0]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k in stack] + [key])
            stack.append((indent, key))
            yield number, path, comments
        comments = []


def closed_paths() -> set[str]:
    """Dotted paths of keys whose parent is a closed schema object (i.e. chart settings)."""
    paths: set[str] = set()
    for parent, node in schema_objects(SCHEMA):
        if node.get("additionalProperties") is False:
            for key in node["properties"]:
                paths.add(f"{parent}.{key}" if parent else key)
    return paths


def test_every_value_is_commented() -> None:
    settings = closed_paths()
    missing = [
        f"line {n}: {path}"
        for n, path, comments in keyed_lines()
        if path in settings and not comments
    ]
    assert not missing, "values without a comment:\n" + "\n".join(missing)


def test_every_default_is_in_the_schema() -> None:
    settings = closed_paths()
    unknown = [
        path
        for _, path, _ in keyed_lines()
        if path.rsplit(".", 1)[0] in {p for p, _ in schema_objects(SCHEMA)} and path not in settings
    ]
    assert not unknown, unknown


def test_schema_objects_are_closed_and_described() -> None:
    for path, node in schema_objects(SCHEMA):
        assert node.get("additionalProperties") is False, f"{path or 'root'} is open"
        for key, child in node["properties"].items():
            if path:
                assert child.get("description"), f"{path}.{key} has no description"
    assert yaml.safe_load(VALUES_TEXT).keys() <= SCHEMA["properties"].keys()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {"agnet": {"enabled": True}},
            "additional properties 'agnet' not allowed",
            id="typo-top-level",
        ),
        pytest.param({"operator.setings": {}}, "'setings' not allowed", id="typo-nested"),
        pytest.param({"agent.cache.sise": "1Gi"}, "'sise' not allowed", id="typo-deep"),
        pytest.param({"agent.kind": "Deployment"}, "/agent/kind", id="bad-agent-kind"),
        pytest.param({"agent.cache.type": "nfs"}, "/agent/cache/type", id="bad-cache-type"),
        pytest.param({"agent.port": 0}, "/agent/port", id="port-zero"),
        pytest.param(
            {"operator.settings.metricsPort": 70000},
            "/operator/settings/metricsPort",
            id="port-too-big",
        ),
        pytest.param(
            {"operator.settings.pollInterval": 0},
            "/operator/settings/pollInterval",
            id="zero-interval",
        ),
        pytest.param(
            {"agent.upstream.url": "ftp://images/"}, "/agent/upstream/url", id="bad-upstream-scheme"
        ),
        pytest.param({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy", id="bad-pull-policy"),
        pytest.param(
            {"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0", id="bad-namespace"
        ),
        pytest.param({"agent.cache.maxSize": "lots"}, "/agent/cache/maxSize", id="bad-max-size"),
        pytest.param({"agent.settings.workers": 0}, "/agent/settings/workers", id="no-workers"),
        pytest.param(
            {"agent.settings.roomWaitTimeout": 0},
            "/agent/settings/roomWaitTimeout",
            id="room-wait-zero",
        ),
        pytest.param(
            {"agent.settings.serveIdleTimeout": "60s"},
            "/agent/settings/serveIdleTimeout",
            id="idle-timeout-with-unit",
        ),
        pytest.param(
            {"agent.settings.keystoneTimeout": 301},
            "/agent/settings/keystoneTimeout",
            id="keystone-timeout-past-agent-limit",
        ),
        pytest.param(
            {"agent.settings.roomWaitTimout": 60}, "'roomWaitTimout' not allowed", id="typo-setting"
        ),
        pytest.param(
            {"securityContext.runAsUser": 0}, "/securityContext/runAsUser", id="root-user"
        ),
        pytest.param({"agent.enabled": "yes"}, "/agent/enabled", id="bool-as-string"),
        pytest.param(
            {"operator.peering": {"enabled": True}},
            "'peering' not allowed",
            id="kopf-peering-is-gone",
        ),
        pytest.param({"agent.auth": "password"}, "/agent/auth", id="bad-auth"),
        pytest.param(
            {"agent.openstack.cloudsSecret": "Not A Name"},
            "/agent/openstack/cloudsSecret",
            id="bad-clouds-secret",
        ),
        pytest.param({"agent.selfUrl": "agent:9292"}, "/agent/selfUrl", id="self-url-no-scheme"),
        pytest.param(
            {"operator.settings.leaseName": "Leader_Lease"},
            "/operator/settings/leaseName",
            id="bad-lease-name",
        ),
        pytest.param(
            {"operator.settings.leaderElection": "true"},
            "/operator/settings/leaderElection",
            id="election-as-string",
        ),
    ],
)
def test_schema_refuses_bad_values(helm: str, values: dict[str, Any], expected: str) -> None:
    error = template_error(helm, values)
    assert "schema" in error, error
    assert expected in error, error


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {"agent.enabled": True}, "agent.upstream.url is required", id="agent-without-upstream"
        ),
        pytest.param(
            {"agent.enabled": True, "agent.upstream.url": "http://up/", "agent.cache.type": "pvc"},
            "needs agent.kind=StatefulSet",
            id="pvc-on-daemonset",
        ),
        pytest.param(
            {"operator.replicas": 2, "operator.settings.leaderElection": False},
            "needs operator.settings.leaderElection=true",
            id="replicas-without-election",
        ),
        pytest.param(
            {"operator.settings.leaseRenewDeadline": 20},
            "needs leaseRetryPeriod < leaseRenewDeadline < leaseDuration",
            id="renew-deadline-past-lease-duration",
        ),
        pytest.param(
            {"operator.settings.leaseRetryPeriod": 10},
            "needs leaseRetryPeriod < leaseRenewDeadline < leaseDuration",
            id="retry-period-past-renew-deadline",
        ),
        pytest.param(
            {
                "agent.enabled": True,
                "agent.upstream.url": "http://up/",
                "agent.auth": "keystone",
                "operator.settings.agentAuth": "token-file",
            },
            "agent.auth=keystone needs agent.openstack.cloud",
            id="keystone-without-cloud",
        ),
        pytest.param(
            {"agent.enabled": True, "agent.upstream.url": "glance://"},
            "agent.upstream.url=glance:// needs agent.openstack.cloud",
            id="catalog-without-cloud",
        ),
        pytest.param(
            {"operator.serviceAccount": {"create": False, "name": ""}},
            "operator.serviceAccount.name is required",
            id="no-service-account",
        ),
    ],
)
def test_rendering_refuses_inconsistent_values(
    helm: str, values: dict[str, Any], expected: str
) -> None:
    assert expected in template_error(helm, values)
