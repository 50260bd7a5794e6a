"""The operator component: Deployment, ServiceAccount, RBAC (SPEC §4.3), peering, metrics Service.

Covers: env from operator.settings and watchNamespaces, probes on /healthz, the restricted
security context, the agent token mount, RBAC verbs exactly as the spec lists them (ClusterRole
when watching all, a Role per namespace otherwise), peering RBAC and objects only when enabled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.conftest import NAMESPACE, Manifest, Rendering, env_of
from tests.chart.values_sets import VALUE_SETS

OPERATOR = "ic-imagecache-operator"

Rule = tuple[str, str, frozenset[str]]

NAMESPACED_RULES: set[Rule] = {
    ("", "pods", frozenset({"get", "list", "watch"})),
    ("imagecache.dev", "imagecacherequests", frozenset({"get", "list", "watch", "patch"})),
    ("imagecache.dev", "imagecacherequests/status", frozenset({"patch"})),
    ("", "events", frozenset({"create", "patch"})),
}
CLUSTER_PEERING_RULE: Rule = (
    "kopf.dev",
    "clusterkopfpeerings",
    frozenset({"get", "list", "watch", "patch"}),
)
PEERING_RULE: Rule = ("kopf.dev", "kopfpeerings", frozenset({"get", "list", "watch", "patch"}))


def rules_of(role: Manifest) -> set[Rule]:
    """Flatten a role's rules into (group, resource, verbs), one per group × resource."""
    flat: set[Rule] = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                flat.add((group, resource, frozenset(rule["verbs"])))
    assert all("*" not in verbs for _, _, verbs in flat), "no wildcard verbs"
    return flat


def operator_container(rendering: Rendering) -> Manifest:
    deployment = rendering.one("Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@pytest.fixture
def defaults(render: Callable[..., Rendering]) -> Rendering:
    return render()


def test_deployment_runs_the_operator_with_settings(defaults: Rendering) -> None:
    deployment = defaults.one("Deployment", OPERATOR)
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(defaults)
    assert container["command"] == ["imagecache-operator"]
    assert container["image"] == "ghcr.io/imagecache/imagecache:0.1.0"
    assert env_of(container) == {
        "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": "/var/run/secrets/imagecache/agent-token/token",
        "IMAGECACHE_OPERATOR_AGENT_PORT": "9292",
        "IMAGECACHE_OPERATOR_POLL_INTERVAL": "2",
        "IMAGECACHE_OPERATOR_RECHECK_INTERVAL": "300",
        "IMAGECACHE_OPERATOR_REQUEST_TIMEOUT": "10",
        "IMAGECACHE_OPERATOR_MAX_CONCURRENCY": "64",
        "IMAGECACHE_OPERATOR_METRICS_PORT": "8080",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF": "1",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF_CAP": "300",
        "IMAGECACHE_OPERATOR_EVICT_TIMEOUT": "60",
        "IMAGECACHE_OPERATOR_LOG_LEVEL": "INFO",
    }
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "96Mi"}
    assert container["resources"]["limits"] == {"memory": "256Mi"}


def test_settings_and_image_values_reach_the_container(render: Callable[..., Rendering]) -> None:
    rendering = render(
        {
            "operator.settings.pollInterval": 0.5,
            "operator.settings.metricsPort": 9100,
            "image": {"repository": "registry.local/ic", "tag": "dev", "pullPolicy": "Never"},
            "watchNamespaces": ["openstack", "glance"],
        }
    )
    container = operator_container(rendering)
    env = env_of(container)
    assert env["IMAGECACHE_OPERATOR_POLL_INTERVAL"] == "0.5"
    assert env["IMAGECACHE_OPERATOR_METRICS_PORT"] == "9100"
    assert env["IMAGECACHE_OPERATOR_NAMESPACES"] == "openstack,glance"
    assert container["image"] == "registry.local/ic:dev"
    assert container["imagePullPolicy"] == "Never"
    assert container["ports"][0]["containerPort"] == 9100
    service = rendering.one("Service", OPERATOR)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_image_digest_wins_over_tag(render: Callable[..., Rendering]) -> None:
    digest = "sha256:" + "ab" * 32
    container = operator_container(render({"image.digest": digest, "image.tag": "x"}))
    assert container["image"] == f"ghcr.io/imagecache/imagecache@{digest}"


def test_restricted_security_and_token_mount(defaults: Rendering) -> None:
    pod = defaults.one("Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(defaults)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] == 65532
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["agent-token"]["mountPath"] == "/var/run/secrets/imagecache/agent-token"
    assert "subPath" not in mounts["agent-token"], "a subPath mount never sees a rotated token"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["agent-token"]["secret"]["secretName"] == "ic-imagecache-agent-token"
    assert volumes["agent-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert pod["serviceAccountName"] == OPERATOR


def test_cluster_wide_rbac_is_exactly_the_spec(defaults: Rendering) -> None:
    role = defaults.one("ClusterRole", OPERATOR)
    assert rules_of(role) == NAMESPACED_RULES
    assert defaults.of_kind("Role") == [] and defaults.of_kind("RoleBinding") == []
    binding = defaults.one("ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    account = defaults.one("ServiceAccount", OPERATOR)
    assert account["metadata"]["namespace"] == NAMESPACE


def test_watch_namespaces_gets_a_role_per_namespace(render: Callable[..., Rendering]) -> None:
    rendering = render(VALUE_SETS["watch-namespaces"])
    assert rendering.of_kind("ClusterRole") == [] and rendering.of_kind("ClusterRoleBinding") == []
    roles = {r["metadata"]["namespace"]: r for r in rendering.of_kind("Role")}
    assert sorted(roles) == ["glance-staging", "openstack"]
    for role in roles.values():
        assert rules_of(role) == NAMESPACED_RULES
    bindings = {b["metadata"]["namespace"]: b for b in rendering.of_kind("RoleBinding")}
    assert sorted(bindings) == ["glance-staging", "openstack"]
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == OPERATOR
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
        ]


@pytest.mark.parametrize(
    ("value_set", "cluster_rules", "role_rules", "peering_kind"),
    [
        pytest.param(
            "peering-cluster",
            NAMESPACED_RULES | {CLUSTER_PEERING_RULE},
            None,
            "ClusterKopfPeering",
            id="cluster",
        ),
        pytest.param(
            "peering-namespaced",
            None,
            NAMESPACED_RULES | {PEERING_RULE},
            "KopfPeering",
            id="namespaced",
        ),
    ],
)
def test_peering_adds_its_rbac_and_objects(
    render: Callable[..., Rendering],
    value_set: str,
    cluster_rules: set[Rule] | None,
    role_rules: set[Rule] | None,
    peering_kind: str,
) -> None:
    rendering = render(VALUE_SETS[value_set])
    cluster_roles = rendering.of_kind("ClusterRole")
    assert [rules_of(role) for role in cluster_roles] == ([cluster_rules] if cluster_rules else [])
    for role in rendering.of_kind("Role"):
        assert rules_of(role) == role_rules
    peerings = rendering.of_kind(peering_kind)
    assert peerings, f"no {peering_kind} rendered"
    names = {p["metadata"]["name"] for p in peerings}
    assert len(names) == 1
    deployment = rendering.one("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"], "peered replicas roll one by one"
    assert env_of(operator_container(rendering))["IMAGECACHE_OPERATOR_PEERING"] == names.pop()


def test_no_peering_objects_without_peering(defaults: Rendering) -> None:
    assert not defaults.of_kind("KopfPeering") and not defaults.of_kind("ClusterKopfPeering")
    assert "IMAGECACHE_OPERATOR_PEERING" not in env_of(operator_container(defaults))


def test_existing_service_account(render: Callable[..., Rendering]) -> None:
    rendering = render({"operator.serviceAccount": {"create": False, "name": "ops"}})
    assert not [a for a in rendering.of_kind("ServiceAccount") if a["metadata"]["name"] == "ops"]
    pod = rendering.one("Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"
    binding: dict[str, Any] = rendering.one("ClusterRoleBinding", OPERATOR)
    assert binding["subjects"][0]["name"] == "ops"


@pytest.mark.parametrize("value_set", ["defaults", "peering-namespaced"])
def test_operator_env_is_accepted_by_operator_settings(
    render: Callable[..., Rendering], monkeypatch: pytest.MonkeyPatch, value_set: str
) -> None:
    """Every variable the chart sets is a real operator setting, with a value it accepts."""
    settings_module = pytest.importorskip("imagecache.controller.settings")
    settings_class = settings_module.OperatorSettings
    env = env_of(operator_container(render(VALUE_SETS[value_set])))
    for name in env:
        field = name.removeprefix("IMAGECACHE_OPERATOR_").lower()
        assert field in settings_class.model_fields, f"{name} is no operator setting"
    for name in [n for n in os.environ if n.startswith("IMAGECACHE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class()
    assert str(settings.agent_token_file) == "/var/run/secrets/imagecache/agent-token/token"
    assert settings.metrics_port == 8080
    expected = VALUE_SETS[value_set].get("watchNamespaces", [])
    assert list(settings.namespaces) == expected
