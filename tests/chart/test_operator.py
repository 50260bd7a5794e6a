"""The operator component: Deployment, ServiceAccount, RBAC (SPEC §4.3), leader election, PDB.

Covers: env rendered from the one operator.settings map (every key, camelCase to
IMAGECACHE_OPERATOR_SNAKE_CASE) plus the chart-owned ones and the downward API; probes on /healthz
and /readyz; the restricted security context; the agent token mount; RBAC verbs exactly as the
spec lists them (ClusterRole when watching all, a Role per namespace otherwise; events create
and patch only); two replicas with leader election by default, with a Role on the one Lease in
the release namespace and a PodDisruptionBudget; no kopf peering anywhere; one replica without
election.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, NAMESPACE, Manifest, Rendering, env_of
from tests.chart.values_sets import VALUE_SETS

OPERATOR = "ic-imagecache-operator"

Rule = tuple[str, str, frozenset[str]]

NAMESPACED_RULES: set[Rule] = {
    ("", "pods", frozenset({"get", "list", "watch"})),
    ("imagecache.dev", "imagecacherequests", frozenset({"get", "list", "watch", "patch"})),
    ("imagecache.dev", "imagecacherequests/status", frozenset({"patch"})),
    ("", "events", frozenset({"create", "patch"})),
}
LEASE_ROLE = f"{OPERATOR}-leader-election"
TOKENS_ROLE = f"{OPERATOR}-agent-tokens"


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
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"], "elected replicas roll one by one"
    container = operator_container(defaults)
    assert container["command"] == ["imagecache-operator"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/imagecache/imagecache:{app_version}"
    assert env_of(container) == {
        "IMAGECACHE_OPERATOR_AGENT_TOKEN_FILE": "/var/run/secrets/imagecache/agent-token/token",
        "IMAGECACHE_OPERATOR_AGENT_AUTH": "kubernetes",
        "IMAGECACHE_OPERATOR_AGENT_TOKEN_SECONDS": "3600",
        "IMAGECACHE_OPERATOR_SERVICE_ACCOUNT": OPERATOR,
        "IMAGECACHE_OPERATOR_SERVICE_ACCOUNT_NAMESPACE": NAMESPACE,
        "IMAGECACHE_OPERATOR_AGENT_PORT": "9292",
        "IMAGECACHE_OPERATOR_POLL_INTERVAL": "2",
        "IMAGECACHE_OPERATOR_RECHECK_INTERVAL": "300",
        "IMAGECACHE_OPERATOR_REQUEST_TIMEOUT": "10",
        "IMAGECACHE_OPERATOR_MAX_CONCURRENCY": "64",
        "IMAGECACHE_OPERATOR_METRICS_HOST": "::",
        "IMAGECACHE_OPERATOR_METRICS_PORT": "8080",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF": "1",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF_CAP": "300",
        "IMAGECACHE_OPERATOR_EVICT_TIMEOUT": "60",
        "IMAGECACHE_OPERATOR_STATUS_INTERVAL": "5",
        "IMAGECACHE_OPERATOR_QUEUE_POSITION_INTERVAL": "30",
        "IMAGECACHE_OPERATOR_MAX_POLL_STRETCH": "8",
        "IMAGECACHE_OPERATOR_LEADER_ELECTION": "true",
        "IMAGECACHE_OPERATOR_LEASE_NAME": OPERATOR,
        "IMAGECACHE_OPERATOR_LEASE_NAMESPACE": NAMESPACE,
        "IMAGECACHE_OPERATOR_LEASE_DURATION": "15",
        "IMAGECACHE_OPERATOR_LEASE_RENEW_DEADLINE": "10",
        "IMAGECACHE_OPERATOR_LEASE_RETRY_PERIOD": "2",
        "IMAGECACHE_OPERATOR_LOG_LEVEL": "INFO",
    }
    downward = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert downward == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "96Mi"}
    assert container["resources"]["limits"] == {"memory": "256Mi"}


def test_every_setting_is_rendered_from_the_one_map(render: Callable[..., Rendering]) -> None:
    """Each key of operator.settings reaches the env under its snake-case name, and only there."""
    settings = {
        "agentAuth": "token-file",
        "agentTokenSeconds": 900,
        "agentPort": 9393,
        "pollInterval": 0.5,
        "recheckInterval": 1000000,
        "requestTimeout": 7,
        "maxConcurrency": 8,
        "metricsHost": "0.0.0.0",
        "metricsPort": 9100,
        "retryBackoff": 2,
        "retryBackoffCap": 30,
        "evictTimeout": 0.25,
        "statusInterval": 0,
        "queuePositionInterval": 12,
        "maxPollStretch": 1,
        "leaderElection": True,
        "leaseName": "",
        "leaseDuration": 30,
        "leaseRenewDeadline": 20.5,
        "leaseRetryPeriod": 4,
        "logLevel": "DEBUG",
    }
    env = env_of(operator_container(render({"operator.settings": settings})))
    expected = {
        "IMAGECACHE_OPERATOR_AGENT_AUTH": "token-file",
        "IMAGECACHE_OPERATOR_AGENT_TOKEN_SECONDS": "900",
        "IMAGECACHE_OPERATOR_AGENT_PORT": "9393",
        "IMAGECACHE_OPERATOR_POLL_INTERVAL": "0.5",
        "IMAGECACHE_OPERATOR_RECHECK_INTERVAL": "1000000",
        "IMAGECACHE_OPERATOR_REQUEST_TIMEOUT": "7",
        "IMAGECACHE_OPERATOR_MAX_CONCURRENCY": "8",
        "IMAGECACHE_OPERATOR_METRICS_HOST": "0.0.0.0",
        "IMAGECACHE_OPERATOR_METRICS_PORT": "9100",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF": "2",
        "IMAGECACHE_OPERATOR_RETRY_BACKOFF_CAP": "30",
        "IMAGECACHE_OPERATOR_EVICT_TIMEOUT": "0.25",
        "IMAGECACHE_OPERATOR_STATUS_INTERVAL": "0",
        "IMAGECACHE_OPERATOR_QUEUE_POSITION_INTERVAL": "12",
        "IMAGECACHE_OPERATOR_MAX_POLL_STRETCH": "1",
        "IMAGECACHE_OPERATOR_LEADER_ELECTION": "true",
        "IMAGECACHE_OPERATOR_LEASE_NAME": OPERATOR,  # empty: the chart's default
        "IMAGECACHE_OPERATOR_LEASE_DURATION": "30",
        "IMAGECACHE_OPERATOR_LEASE_RENEW_DEADLINE": "20.5",
        "IMAGECACHE_OPERATOR_LEASE_RETRY_PERIOD": "4",
        "IMAGECACHE_OPERATOR_LOG_LEVEL": "DEBUG",
    }
    assert {k: v for k, v in env.items() if k in expected} == expected
    chart_owned = {
        "AGENT_TOKEN_FILE",
        "LEASE_NAMESPACE",
        "SERVICE_ACCOUNT",
        "SERVICE_ACCOUNT_NAMESPACE",
    }
    assert {k.removeprefix("IMAGECACHE_OPERATOR_") for k in env} - chart_owned == {
        k.removeprefix("IMAGECACHE_OPERATOR_") for k in expected
    }


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
    assert [r["metadata"]["name"] for r in defaults.of_kind("Role")] == [TOKENS_ROLE, LEASE_ROLE]
    assert [b["metadata"]["name"] for b in defaults.of_kind("RoleBinding")] == [
        TOKENS_ROLE,
        LEASE_ROLE,
    ]
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
    roles = {
        r["metadata"]["namespace"]: r
        for r in rendering.of_kind("Role")
        if r["metadata"]["name"] == OPERATOR
    }
    assert sorted(roles) == ["glance-staging", "openstack"]
    for role in roles.values():
        assert rules_of(role) == NAMESPACED_RULES
    bindings = {
        b["metadata"]["namespace"]: b
        for b in rendering.of_kind("RoleBinding")
        if b["metadata"]["name"] == OPERATOR
    }
    assert sorted(bindings) == ["glance-staging", "openstack"]
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == OPERATOR
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
        ]


def lease_role(rendering: Rendering) -> Manifest:
    return rendering.one("Role", LEASE_ROLE)


@pytest.mark.parametrize("value_set", ["defaults", "election-namespaced"])
def test_leader_election_gets_the_lease_and_nothing_else(
    render: Callable[..., Rendering], value_set: str
) -> None:
    rendering = render(VALUE_SETS[value_set])
    lease_name = VALUE_SETS[value_set].get("operator.settings.leaseName", OPERATOR)
    role = lease_role(rendering)
    assert role["metadata"]["namespace"] == NAMESPACE, "the Lease lives in the release namespace"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease_name],
            "verbs": ["get", "update"],
        },
    ]
    binding = rendering.one("RoleBinding", LEASE_ROLE)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEASE_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    env = env_of(operator_container(rendering))
    assert env["IMAGECACHE_OPERATOR_LEASE_NAME"] == lease_name
    assert env["IMAGECACHE_OPERATOR_LEASE_NAMESPACE"] == NAMESPACE
    # Leases are granted nowhere else: not cluster-wide, not in the watched namespaces.
    for other in rendering.of_kind("ClusterRole") + rendering.of_kind("Role"):
        if other["metadata"]["name"] != LEASE_ROLE:
            assert not [r for r in other["rules"] if "coordination.k8s.io" in r["apiGroups"]]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_kopf_peering_anywhere(render: Callable[..., Rendering], value_set: str) -> None:
    rendering = render(VALUE_SETS[value_set], include_crds=True)
    assert not [o for o in rendering.objects if "kopf" in o["apiVersion"]]
    assert not [o for o in rendering.objects if "kopf.dev" in o["metadata"]["name"]]
    for role in rendering.of_kind("ClusterRole") + rendering.of_kind("Role"):
        assert not [r for r in role["rules"] if "kopf.dev" in r["apiGroups"]]
    assert "IMAGECACHE_OPERATOR_PEERING" not in env_of(operator_container(rendering))


def test_two_replicas_keep_one_through_a_drain(defaults: Rendering) -> None:
    budget = defaults.one("PodDisruptionBudget", OPERATOR)
    assert budget["spec"]["minAvailable"] == 1
    labels = defaults.one("Deployment", OPERATOR)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_replicas_spread_over_nodes_unless_affinity_is_given(
    render: Callable[..., Rendering], defaults: Rendering
) -> None:
    pod = defaults.one("Deployment", OPERATOR)["spec"]["template"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "operator"
    given = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "node-role", "operator": "In", "values": ["infra"]}
                        ]
                    }
                ]
            }
        }
    }
    custom = render({"operator.affinity": given}).one("Deployment", OPERATOR)
    assert custom["spec"]["template"]["spec"]["affinity"] == given
    single = render(VALUE_SETS["single-operator"]).one("Deployment", OPERATOR)
    assert "affinity" not in single["spec"]["template"]["spec"]


def test_single_operator_without_election(render: Callable[..., Rendering]) -> None:
    rendering = render(VALUE_SETS["single-operator"])
    deployment = rendering.one("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two at once"
    assert env_of(operator_container(rendering))["IMAGECACHE_OPERATOR_LEADER_ELECTION"] == "false"
    assert not [r for r in rendering.of_kind("Role") if r["metadata"]["name"] == LEASE_ROLE]
    assert rendering.of_kind("PodDisruptionBudget") == [], "a PDB of one would block drains"


def test_existing_service_account(render: Callable[..., Rendering]) -> None:
    rendering = render({"operator.serviceAccount": {"create": False, "name": "ops"}})
    assert not [a for a in rendering.of_kind("ServiceAccount") if a["metadata"]["name"] == "ops"]
    pod = rendering.one("Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"
    binding: dict[str, Any] = rendering.one("ClusterRoleBinding", OPERATOR)
    assert binding["subjects"][0]["name"] == "ops"


@pytest.mark.parametrize("value_set", ["defaults", "election-namespaced", "single-operator"])
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
    assert settings.metrics_port == 8080 and settings.metrics_host == "::"
    assert settings.lease_namespace == NAMESPACE
    expected = VALUE_SETS[value_set].get("watchNamespaces", [])
    assert list(settings.namespaces) == expected


def test_whole_numbers_from_a_values_file_keep_no_exponent(
    render: Callable[..., Rendering], tmp_path: Path
) -> None:
    """YAML numbers reach templates as floats; an integer setting would refuse "1e+07"."""
    values = tmp_path / "values.yaml"
    values.write_text(
        "operator:\n  settings:\n    maxConcurrency: 10000000\n    pollInterval: 0.5\n"
    )
    env = env_of(operator_container(render(files=[values])))
    assert env["IMAGECACHE_OPERATOR_MAX_CONCURRENCY"] == "10000000"
    assert env["IMAGECACHE_OPERATOR_POLL_INTERVAL"] == "0.5"


def test_per_pod_agent_tokens_only_for_the_operators_own_account(defaults: Rendering) -> None:
    role = defaults.one("Role", TOKENS_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "resourceNames": [OPERATOR],
            "verbs": ["create"],
        }
    ]
    binding = defaults.one("RoleBinding", TOKENS_ROLE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    for other in defaults.of_kind("ClusterRole") + defaults.of_kind("Role"):
        if other["metadata"]["name"] != TOKENS_ROLE:
            assert not [r for r in other["rules"] if "serviceaccounts/token" in r["resources"]]


def test_token_file_mode_grants_no_token_requests(render: Callable[..., Rendering]) -> None:
    rendering = render({"operator.settings.agentAuth": "token-file"})
    assert not [r for r in rendering.of_kind("Role") if r["metadata"]["name"] == TOKENS_ROLE]
    env = env_of(operator_container(rendering))
    assert env["IMAGECACHE_OPERATOR_AGENT_AUTH"] == "token-file"
