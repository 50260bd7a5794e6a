"""The chart's alert rules under promtool: valid, and each alert right on synthetic series.

Covers: `promtool check rules` on the rendered PrometheusRule's groups (defaults, and with every
`for` at 0s as the live test uses them); `promtool test rules` per alert, with the chart's
default thresholds and `for` durations: a series that must fire it does, with the expected
labels, and a series just on the quiet side of its threshold (or of its `for`) stays silent.
The annotations are left out of the unit tests (promtool compares them verbatim); their
templates are checked by `promtool check rules` and expanded by a real Prometheus in
test_live.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import NAMESPACE
from tests.monitoring.rules import alert_rules

RuleGroups = Callable[..., list[dict[str, Any]]]

OPERATOR = {"namespace": NAMESPACE, "pod": "ic-imagecache-operator-0", "job": "operator"}
AGENT = {"namespace": NAMESPACE, "pod": "ic-imagecache-agent-x", "job": "agent"}


def series(metric: str, base: dict[str, str], **labels: str) -> str:
    """A promtool series selector: ``metric{label="value",...}``."""
    pairs = ",".join(f'{k}="{v}"' for k, v in {**base, **labels}.items())
    return f"{metric}{{{pairs}}}"


def op(metric: str, **labels: str) -> str:
    """A series scraped from the operator."""
    return series(metric, OPERATOR, **labels)


def ag(metric: str, **labels: str) -> str:
    """A series scraped from an agent."""
    return series(metric, AGENT, **labels)


@dataclass(frozen=True)
class Case:
    """Input series (series -> promtool values), an evaluation time, the alerts expected."""

    series: dict[str, str]
    at: str
    alerts: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class AlertCases:
    alert: str
    fires: Case
    silent: list[Case]


CASES = [
    AlertCases(
        "ImageCacheRequestFailed",
        fires=Case(
            {op("imagecache_operator_requests", phase="Failed"): "1x30"},
            "20m",
            [{"namespace": NAMESPACE, "severity": "warning"}],
        ),
        silent=[
            # Failed for 10 min only (for: 15m), then fixed.
            Case({op("imagecache_operator_requests", phase="Failed"): "1x10 0x20"}, "20m"),
            Case({op("imagecache_operator_requests", phase="Cached"): "5x30"}, "20m"),
        ],
    ),
    AlertCases(
        "ImageCacheRequestStalled",
        fires=Case(
            {op("imagecache_operator_request_stall_seconds"): "0+60x60"},
            "40m",
            [{"namespace": NAMESPACE, "severity": "warning"}],
        ),
        silent=[
            # Progress every 25 min: never 30 min without.
            Case({op("imagecache_operator_request_stall_seconds"): "0+60x25 0+60x25"}, "50m"),
            # Above 1800 s for 3 min only (for: 5m).
            Case({op("imagecache_operator_request_stall_seconds"): "1740+60x5"}, "5m"),
        ],
    ),
    AlertCases(
        "ImageCacheAgentUnreachable",
        fires=Case(
            {
                op(
                    "imagecache_operator_agent_requests_total", method="GET", outcome="unreachable"
                ): "0+10x30",
                op(
                    "imagecache_operator_agent_requests_total", method="GET", outcome="200"
                ): "0+50x30",
            },
            "25m",
            [{"namespace": NAMESPACE, "severity": "warning"}],
        ),
        silent=[
            Case(
                {
                    op(
                        "imagecache_operator_agent_requests_total",
                        method="GET",
                        outcome="unreachable",
                    ): "5x30",
                    op(
                        "imagecache_operator_agent_requests_total", method="GET", outcome="200"
                    ): "0+50x30",
                },
                "25m",
            ),
        ],
    ),
    AlertCases(
        "ImageCacheAgentCacheNearlyFull",
        fires=Case(
            {ag("imagecache_cache_bytes"): "95x60", ag("imagecache_cache_max_bytes"): "100x60"},
            "45m",
            [{"namespace": NAMESPACE, "pod": "ic-imagecache-agent-x", "severity": "info"}],
        ),
        silent=[
            Case(
                {ag("imagecache_cache_bytes"): "85x60", ag("imagecache_cache_max_bytes"): "100x60"},
                "45m",
            ),
        ],
    ),
    AlertCases(
        "ImageCacheAgentDiskNearlyFull",
        fires=Case(
            {
                ag("imagecache_cache_filesystem_avail_bytes"): "5x30",
                ag("imagecache_cache_filesystem_size_bytes"): "100x30",
            },
            "20m",
            [{"namespace": NAMESPACE, "pod": "ic-imagecache-agent-x", "severity": "warning"}],
        ),
        silent=[
            Case(
                {
                    ag("imagecache_cache_filesystem_avail_bytes"): "50x30",
                    ag("imagecache_cache_filesystem_size_bytes"): "100x30",
                },
                "20m",
            ),
        ],
    ),
    AlertCases(
        "ImageCacheDownloadFailures",
        fires=Case(
            {ag("imagecache_failures_total", reason="connection"): "0+60x40"},
            "30m",
            [
                {
                    "namespace": NAMESPACE,
                    "pod": "ic-imagecache-agent-x",
                    "reason": "connection",
                    "severity": "warning",
                }
            ],
        ),
        silent=[
            # 0.005 failures/s, below 0.01.
            Case({ag("imagecache_failures_total", reason="connection"): "0+0.3x40"}, "30m"),
        ],
    ),
    AlertCases(
        "ImageCacheNoLeader",
        fires=Case(
            {
                op("imagecache_operator_leader"): "0x10",
                series("imagecache_operator_leader", OPERATOR, pod="op-1"): "0x10",
            },
            "5m",
            [{"namespace": NAMESPACE, "severity": "critical"}],
        ),
        silent=[
            Case(
                {
                    op("imagecache_operator_leader"): "1x10",
                    series("imagecache_operator_leader", OPERATOR, pod="op-1"): "0x10",
                },
                "5m",
            ),
        ],
    ),
    AlertCases(
        "ImageCacheStatusWritesFailing",
        fires=Case(
            {
                op("imagecache_operator_api_writes_total", kind="status", outcome="ok"): "0+10x30",
                op("imagecache_operator_api_writes_total", kind="status", outcome="503"): "0+5x30",
            },
            "25m",
            [{"namespace": NAMESPACE, "severity": "warning"}],
        ),
        silent=[
            Case(
                {
                    op(
                        "imagecache_operator_api_writes_total", kind="status", outcome="ok"
                    ): "0+100x30",
                    op(
                        "imagecache_operator_api_writes_total", kind="status", outcome="409"
                    ): "0+1x30",
                    op(
                        "imagecache_operator_api_writes_total", kind="event", outcome="503"
                    ): "0+50x30",
                },
                "25m",
            ),
        ],
    ),
    AlertCases(
        "ImageCacheCredentialsRefused",
        fires=Case(
            {ag("imagecache_upstream_auth_failures_total", reason="unauthorized"): "0x5 1x30"},
            "12m",
            [
                {
                    "namespace": NAMESPACE,
                    "pod": "ic-imagecache-agent-x",
                    "reason": "unauthorized",
                    "severity": "critical",
                }
            ],
        ),
        silent=[
            Case(
                {
                    ag("imagecache_failures_total", reason="connection"): "0+1x30",
                    ag("imagecache_upstream_auth_failures_total", reason="unauthorized"): "0x30",
                    # a refusal 11 min before: out of the 10 min window
                    ag("imagecache_upstream_auth_failures_total", reason="auth_unavailable"): (
                        "0 1x30"
                    ),
                },
                "12m",
            ),
        ],
    ),
]


def without_annotations(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups
    ]


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def unit_test(alert: str, case: Case) -> dict[str, Any]:
    """One promtool test group: `case`'s series, `alert` evaluated at `case.at`."""
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
        "alert_rule_test": [
            {
                "eval_time": case.at,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": labels} for labels in case.alerts],
            }
        ],
    }


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {f"metrics.prometheusRule.alerts.{a}.for": "0s" for a in ("requestFailed", "noLeader")},
            id="for-0s",
        ),
    ],
)
def test_promtool_check_rules(
    promtool: str, rule_groups: RuleGroups, tmp_path: Path, values: dict[str, Any]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(values)}))
    result = promtool_run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(CASES)} rules found" in result.stdout, result.stdout


def test_every_alert_has_cases(rule_groups: RuleGroups) -> None:
    assert set(alert_rules(rule_groups())) == {c.alert for c in CASES}


@pytest.mark.parametrize("cases", CASES, ids=lambda c: c.alert)
def test_alert_fires_and_stays_silent(
    promtool: str, rule_groups: RuleGroups, tmp_path: Path, cases: AlertCases
) -> None:
    assert cases.fires.alerts, "a firing case expects alerts"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": without_annotations(rule_groups())}))
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [unit_test(cases.alert, case) for case in [cases.fires, *cases.silent]],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = promtool_run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
