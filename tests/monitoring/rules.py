"""The chart's alert rules and dashboard queries as the monitoring tests use them.

`render_rule_groups` renders the chart's PrometheusRule (with `helm template`) and returns its
``spec.groups``; `dashboard_queries` lists every target expression of the dashboard JSON, and
`instantiate` fills in the Grafana variables the way Grafana would for one namespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.chart.conftest import CHART, template

DASHBOARD = CHART / "files" / "dashboard.json"
METRIC_NAME = re.compile(r"\b(imagecache_[a-z0-9_]+)\b")


def render_rule_groups(helm: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rendered PrometheusRule's groups (metrics.prometheusRule.enabled plus `values`)."""
    rendering = template(helm, {"metrics.prometheusRule.enabled": True, **(values or {})})
    groups = rendering.one("PrometheusRule")["spec"]["groups"]
    assert isinstance(groups, list)
    return groups


def alert_rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Alert name -> rule."""
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target of every panel."""

    def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for panel in node.get("panels", []):
            yield panel
            yield from panels(panel)

    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            yield panel["title"], target["refId"], target["expr"]


def instantiate(expr: str, *, namespace: str, rate_interval: str) -> str:
    """A dashboard expression with its Grafana variables filled in (a namespace name has no
    regex metacharacter but ``-``, which needs no escape)."""
    return expr.replace("$namespace", namespace).replace("$__rate_interval", rate_interval)


def metric_names(expr: str) -> set[str]:
    """The imagecache metric names an expression reads (base names of histograms included)."""
    return set(METRIC_NAME.findall(expr))
