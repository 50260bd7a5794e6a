"""The monitoring objects (SPEC §5.1): ServiceMonitor, PodMonitor, PrometheusRule, dashboard.

Covers: none of them by default, each only with its own switch; each validates against the
Prometheus Operator's CRD schema; scrape values (interval, timeout, labels, relabelings, the
objects' namespace) reach both monitors; the PodMonitor picks the chart's agents, or the pods of
`podSelector` (sidecars) in the namespaces asked for; every alert carries a summary, a
description and a runbook_url whose anchor is a heading of docs/operations.md, with thresholds,
`for` and severity from values; the dashboard ConfigMap carries the sidecar label (configurable)
and the file's JSON unchanged; the JSON has unique panel ids, the `datasource` and `namespace`
variables, the issue's panels, and every target on the datasource variable (no uid anywhere).
The rules themselves are checked by promtool and a real Prometheus in tests/monitoring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chart import monitoring_crds
from tests.chart.conftest import CHART, NAMESPACE, REPO, Manifest, Rendering, template_error
from tests.chart.values_sets import HTTP_UPSTREAM

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
AGENTS = {"agent.enabled": True, "agent.upstream.url": HTTP_UPSTREAM}
DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
ALERTS = {
    "ImageCacheRequestFailed",
    "ImageCacheRequestStalled",
    "ImageCacheAgentUnreachable",
    "ImageCacheAgentCacheNearlyFull",
    "ImageCacheAgentDiskNearlyFull",
    "ImageCacheDownloadFailures",
    "ImageCacheNoLeader",
    "ImageCacheStatusWritesFailing",
    "ImageCacheCredentialsRefused",
}


def monitoring_objects(rendering: Rendering) -> list[Manifest]:
    """The monitoring.coreos.com objects and the dashboard ConfigMap of a rendering."""
    return [
        o
        for o in rendering.objects
        if o["kind"] in MONITORING_KINDS
        or (o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    ]


def rules(rendering: Rendering) -> list[dict[str, Any]]:
    rule = rendering.one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def doc_anchors() -> set[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def test_nothing_by_default(render: Callable[..., Rendering]) -> None:
    assert monitoring_objects(render(AGENTS)) == []


@pytest.mark.parametrize(
    ("switch", "kinds"),
    [
        pytest.param("metrics.serviceMonitor.enabled", ["PodMonitor", "ServiceMonitor"], id="sm"),
        pytest.param("metrics.prometheusRule.enabled", ["PrometheusRule"], id="rule"),
        pytest.param("metrics.dashboards.enabled", ["ConfigMap"], id="dashboard"),
    ],
)
def test_each_switch_renders_only_its_objects(
    render: Callable[..., Rendering], switch: str, kinds: list[str]
) -> None:
    objects = monitoring_objects(render({**AGENTS, switch: True}))
    assert sorted(o["kind"] for o in objects) == kinds
    for obj in objects:
        if obj["kind"] in MONITORING_KINDS:
            assert monitoring_crds.errors(obj) == []


def test_monitors_carry_the_scrape_values(render: Callable[..., Rendering]) -> None:
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "imagecache_hits_total", "action": "drop"}]
    rendering = render(
        {
            **AGENTS,
            "metrics.serviceMonitor": {
                "enabled": True,
                "namespace": "monitoring",
                "labels": {"release": "kube-prometheus-stack"},
                "annotations": {"note": "x"},
                "interval": "15s",
                "scrapeTimeout": "5s",
                "honorLabels": True,
                "relabelings": relabel,
                "metricRelabelings": drop,
                "agents": {
                    "enabled": True,
                    "podSelector": {},
                    "namespaceSelector": {},
                    "port": "http",
                },
            },
        }
    )
    operator = rendering.one("ServiceMonitor")
    agents = rendering.one("PodMonitor")
    (endpoint,) = operator["spec"]["endpoints"]
    (pod_endpoint,) = agents["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and pod_endpoint["port"] == "http"
    for monitor, scrape in ((operator, endpoint), (agents, pod_endpoint)):
        assert monitoring_crds.errors(monitor) == []
        assert monitor["metadata"]["namespace"] == "monitoring"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["metadata"]["annotations"] == {"note": "x"}
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert scrape["path"] == "/metrics"
        assert (scrape["interval"], scrape["scrapeTimeout"]) == ("15s", "5s")
        assert scrape["honorLabels"] is True
        assert scrape["relabelings"] == relabel
        assert scrape["metricRelabelings"] == drop
    assert operator["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "imagecache",
        "app.kubernetes.io/instance": "ic",
        "app.kubernetes.io/component": "operator",
    }
    service = rendering.one("Service", "ic-imagecache-operator")
    selected = operator["spec"]["selector"]["matchLabels"].items()
    assert selected <= service["metadata"]["labels"].items()
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert agents["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "agent"


def test_the_podmonitor_needs_agents_to_scrape(render: Callable[..., Rendering]) -> None:
    assert render({"metrics.serviceMonitor.enabled": True}).of_kind("PodMonitor") == []
    off = render(
        {
            **AGENTS,
            "metrics.serviceMonitor.enabled": True,
            "metrics.serviceMonitor.agents.enabled": False,
        }
    )
    assert off.of_kind("PodMonitor") == [] and off.of_kind("ServiceMonitor")


def test_the_podmonitor_scrapes_sidecars(render: Callable[..., Rendering]) -> None:
    rendering = render(
        {
            "metrics.serviceMonitor.enabled": True,
            "metrics.serviceMonitor.agents.podSelector": {"app": "glance-api"},
            "metrics.serviceMonitor.agents.namespaceSelector": {"matchNames": ["openstack"]},
            "metrics.serviceMonitor.agents.port": "imagecache",
        }
    )
    monitor = rendering.one("PodMonitor")
    assert monitoring_crds.errors(monitor) == []
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "glance-api"}}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["openstack"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "imagecache"


def test_a_schema_violation_is_caught() -> None:
    """The validator is not vacuous: a typo and a bad duration are errors."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "30s"}]},
    }
    assert any("intervall" in e for e in monitoring_crds.errors(monitor))
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "soon"}]}]},
    }
    assert monitoring_crds.errors(rule)


def test_every_alert_is_documented(render: Callable[..., Rendering]) -> None:
    found = rules(render({"metrics.prometheusRule.enabled": True}))
    assert {r["alert"] for r in found} == ALERTS
    anchors = doc_anchors()
    for rule in found:
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        url = annotations["runbook_url"]
        base, anchor = url.split("#")
        assert base == "https://github.com/imagecache/imagecache/blob/main/docs/operations.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section #{anchor}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_alert_thresholds_are_values(render: Callable[..., Rendering]) -> None:
    rendering = render(
        {
            "metrics.prometheusRule.enabled": True,
            "metrics.prometheusRule.runbookUrl": "https://wiki.example/imagecache",
            "metrics.prometheusRule.alertLabels": {"team": "storage"},
            "metrics.prometheusRule.alerts.requestFailed.for": "0s",
            "metrics.prometheusRule.alerts.requestStalled.seconds": 600,
            "metrics.prometheusRule.alerts.cacheNearlyFull.ratio": 0.75,
            "metrics.prometheusRule.alerts.diskNearlyFull.freeRatio": 0.05,
            "metrics.prometheusRule.alerts.downloadFailures.perSecond": 0.5,
            "metrics.prometheusRule.alerts.statusWritesFailing.ratio": 0.25,
            "metrics.prometheusRule.alerts.noLeader.severity": "page",
        }
    )
    by_name = {r["alert"]: r for r in rules(rendering)}
    assert monitoring_crds.errors(rendering.one("PrometheusRule")) == []
    assert by_name["ImageCacheRequestFailed"]["for"] == "0s"
    assert by_name["ImageCacheRequestStalled"]["expr"].rstrip().endswith("> 600")
    assert by_name["ImageCacheAgentCacheNearlyFull"]["expr"].rstrip().endswith("> 0.75")
    assert by_name["ImageCacheAgentDiskNearlyFull"]["expr"].rstrip().endswith("< 0.05")
    assert by_name["ImageCacheDownloadFailures"]["expr"].rstrip().endswith("> 0.5")
    assert by_name["ImageCacheStatusWritesFailing"]["expr"].rstrip().endswith("> 0.25")
    assert by_name["ImageCacheNoLeader"]["labels"]["severity"] == "page"
    assert f'namespace="{NAMESPACE}"' in by_name["ImageCacheNoLeader"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["team"] == "storage"
        assert rule["annotations"]["runbook_url"].startswith("https://wiki.example/imagecache#")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"metrics.serviceMonitor.intervall": "30s"}, "intervall"),
        ({"metrics.serviceMonitor.interval": "30 seconds"}, "interval"),
        ({"metrics.prometheusRule.alerts.cacheNearlyFull.ratio": 1.5}, "ratio"),
        ({"metrics.prometheusRule.alerts.noLeader.for": "1 minute"}, "for"),
        ({"metrics.prometheusRule.runbookUrl": "docs/operations.md"}, "runbookUrl"),
        ({"metrics.dashboards.lable": "x"}, "lable"),
        (
            {"metrics.serviceMonitor.enabled": True, "operator.service.enabled": False},
            "needs operator.service.enabled",
        ),
    ],
)
def test_bad_monitoring_values_are_refused(helm: str, values: dict[str, Any], needle: str) -> None:
    assert needle in template_error(helm, values)


def test_dashboard_configmap(render: Callable[..., Rendering]) -> None:
    rendering = render({"metrics.dashboards.enabled": True})
    default = rendering.one("ConfigMap", "ic-imagecache-dashboard")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(default["data"]["imagecache.json"]) == DASHBOARD
    custom = render(
        {
            "metrics.dashboards": {
                "enabled": True,
                "namespace": "grafana",
                "label": "grafana.com/dashboard",
                "labelValue": "imagecache",
                "labels": {"team": "storage"},
                "annotations": {"grafana_folder": "imagecache"},
            }
        }
    ).one("ConfigMap", "ic-imagecache-dashboard")
    assert custom["metadata"]["namespace"] == "grafana"
    assert custom["metadata"]["labels"]["grafana.com/dashboard"] == "imagecache"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["labels"]["team"] == "storage"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "imagecache"}


def all_panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from all_panels(panel)


def datasource_uids(node: Any) -> Iterator[str]:
    """Every ``uid`` under a ``datasource`` key anywhere in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield str(value.get("uid"))
            yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


def test_dashboard_json_is_valid() -> None:
    panels = list(all_panels(DASHBOARD))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(isinstance(i, int) for i in ids)
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert set(datasource_uids(DASHBOARD)) == {"${datasource}"}, "a hard-coded datasource uid"
    targets = 0
    for panel in panels:
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            targets += 1
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'namespace=~"$namespace"' in target["expr"], (panel["title"], target["expr"])
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
    assert targets >= 12


def test_dashboard_has_the_issues_panels() -> None:
    titles = {p["title"] for p in all_panels(DASHBOARD)}
    assert {
        "Requests by phase",
        "Time from request to Cached",
        "Bytes cached per second, per agent",
        "Cache use vs max_size",
        "Queue length",
        "Download failures by reason",
        "Upstream and peer bytes",
        "Reconcile tick duration",
        "Kubernetes API writes per second",
        "Leader",
    } <= titles
