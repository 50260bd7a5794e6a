"""Fixtures of the monitoring tests: promtool, prometheus, helm, and the rendered rule groups.

Covers nothing by itself. Each binary is looked up once; a test needing an absent one is skipped
with the reason (Debian's `prometheus` package brings both; `.ci/run` installs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.conftest import find_helm
from tests.monitoring.rules import render_rule_groups
from tests.support.prometheus import find_binary


def _need(name: str, binary: str | None, how: str) -> str:
    if binary is None:
        pytest.skip(f"{name} not found ({how})")
    return binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return _need("promtool", find_binary("promtool"), "apt-get install prometheus")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _need("prometheus", find_binary("prometheus"), "apt-get install prometheus")


@pytest.fixture(scope="session")
def helm_binary() -> str:
    return _need("helm", find_helm(), "run .ci/install-k8s-tools.sh")


@pytest.fixture(scope="session")
def rule_groups(helm_binary: str) -> Callable[..., list[dict[str, Any]]]:
    """`rule_groups(values)`: the PrometheusRule's groups as the chart renders them."""

    def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return render_rule_groups(helm_binary, values)

    return render
