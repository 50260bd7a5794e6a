"""The dashboard and the alerts against a real Prometheus scraping a real operator and agents.

Covers (one scenario, about 20 s): two agents and the operator (the operator tests' emulator
set-up) scraped every second by Prometheus on 127.0.0.1 with the chart's rendered rules (every
`for` at 0s) while three requests go Queued -> Cached and one fails (the upstream corrupts its
bytes); then
* every metric name a dashboard panel or an alert reads exists in Prometheus;
* every dashboard query, with the Grafana variables filled in for the scraped namespace, returns
  data with a number in it;
* every alert expression evaluates without error, and the Failed request's
  (ImageCacheRequestFailed) returns it; the quiet ones return nothing (the disk alert excepted:
  it depends on this machine's disk);
* Prometheus' own rule evaluation is healthy for every rule and has ImageCacheRequestFailed
  firing with its annotations expanded;
* ``promtool check metrics`` is clean on the operator's and an agent's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.kube.emulator import Emulator
from tests.monitoring.rules import alert_rules, dashboard_queries, instantiate, metric_names
from tests.monitoring.scenario import NAMESPACE, Fleet, monitored_fleet
from tests.operator.harness import image_bytes, image_id, phase, wait_for_status
from tests.support.prometheus import PrometheusServer, wait_for
from tests.support.upstreams import Faults

ALERT_KEYS = (
    "requestFailed",
    "requestStalled",
    "agentUnreachable",
    "cacheNearlyFull",
    "diskNearlyFull",
    "downloadFailures",
    "noLeader",
    "statusWritesFailing",
    "credentialsRefused",
)
IMMEDIATE = {f"metrics.prometheusRule.alerts.{key}.for": "0s" for key in ALERT_KEYS}
MACHINE_DEPENDENT = {"ImageCacheAgentDiskNearlyFull"}
RATE_INTERVAL = "1m"


async def run_requests(fleet: Fleet) -> None:
    """Three images cached over the two agents, a fourth failing verification."""
    for n in range(3):
        fleet.upstream.add(image_id(n), image_bytes(f"live-{n}", 256 * 1024))
    bad = image_id(9)
    fleet.upstream.add(bad, image_bytes("live-bad", 64 * 1024))
    fleet.upstream.faults[bad] = Faults(corrupt=True)
    pods = fleet.pods
    for n in range(3):
        await fleet.request(f"good-{n}", image_id(n), pods[n % len(pods)])
    await fleet.request("bad", bad, pods[-1])
    for n in range(3):
        await wait_for_status(fleet.kube, f"good-{n}", phase("Cached"), within=30)
    await wait_for_status(fleet.kube, "bad", phase("Failed"), within=30)


def scraped_after_the_run(prometheus: PrometheusServer, *, ended: float) -> None:
    """Wait (bounded) until every target was scraped twice since `ended` (wall clock), so a
    series born during the run has the two samples a `rate` needs."""
    wait_for(
        lambda: prometheus.query(f"min(timestamp(up)) > {ended + 2.5:.3f}"),
        within=30,
        what="two scrapes of every target after the run",
    )


def numbers(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def promtool_check(promtool: str, url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"{url}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


@pytest.mark.timeout(120)
async def test_dashboard_and_alerts_on_a_real_prometheus(
    kube: Emulator,
    tmp_path: Path,
    prometheus_binary: str,
    promtool: str,
    rule_groups: Callable[..., list[dict[str, Any]]],
) -> None:
    groups = rule_groups(IMMEDIATE)
    rules = alert_rules(groups)
    async with monitored_fleet(
        kube=kube, workdir=tmp_path, prometheus_binary=prometheus_binary, rule_groups=groups
    ) as fleet:
        await run_requests(fleet)
        prometheus = fleet.prometheus
        await asyncio.to_thread(scraped_after_the_run, prometheus, ended=time.time())

        # Every name the dashboard and the alerts read is a metric the processes export.
        stored = await asyncio.to_thread(prometheus.metric_names)
        read = {n for _, _, e in dashboard_queries() for n in metric_names(e)}
        read |= {n for rule in rules.values() for n in metric_names(rule["expr"])}
        assert read - stored == set(), f"names no process exports: {sorted(read - stored)}"

        # Every panel shows data.
        empty: list[str] = []
        for title, ref, expr in dashboard_queries():
            query = instantiate(expr, namespace=NAMESPACE, rate_interval=RATE_INTERVAL)
            values = numbers(await asyncio.to_thread(prometheus.query, query))
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{title} [{ref}]: {query} -> {values}")
        assert not empty, "panels without data:\n" + "\n".join(empty)

        # Every alert expression evaluates; the Failed request's returns it, the quiet ones not.
        results = {
            name: await asyncio.to_thread(prometheus.query, rule["expr"])
            for name, rule in rules.items()
        }
        failed = results.pop("ImageCacheRequestFailed")
        assert [(s["metric"], s["value"][1]) for s in failed] == [({"namespace": NAMESPACE}, "1")]
        loud = {n: r for n, r in results.items() if r and n not in MACHINE_DEPENDENT}
        assert loud == {}, f"alerts that should be quiet: {loud}"

        # Prometheus' own evaluation: every rule healthy, the Failed alert firing, expanded.
        def firing() -> list[dict[str, Any]]:
            alerts = prometheus.api("alerts")["alerts"]
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "ImageCacheRequestFailed" and a["state"] == "firing"
            ]

        (alert,) = await asyncio.to_thread(
            wait_for, firing, within=20, what="ImageCacheRequestFailed firing"
        )
        assert alert["labels"]["namespace"] == NAMESPACE
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["description"].startswith("1 ImageCacheRequest(s)")
        assert alert["annotations"]["runbook_url"].endswith("#imagecacherequestfailed")
        evaluated = await asyncio.to_thread(prometheus.api, "rules")
        health = {
            r["name"]: (r["health"], r.get("lastError"))
            for g in evaluated["groups"]
            for r in g["rules"]
        }
        assert set(health) == set(rules)
        assert all(h == "ok" for h, _ in health.values()), health

        for url in (fleet.operator_url, fleet.agents[0].url):
            await asyncio.to_thread(promtool_check, promtool, url)
