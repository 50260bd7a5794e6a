"""Label and field selectors on list (and the same matchers on watch, see test_watch.py).

Covers: equality (=, ==, !=), set-based in / notin, exists and !exists, several terms, field
selectors over metadata and status, and a malformed selector answered with 400.
"""

from __future__ import annotations

import pytest

from tests.kube.client import ApiError
from tests.kube.emulator import Emulator

PODS = {
    "a": {"app": "glance", "tier": "api"},
    "b": {"app": "glance", "tier": "worker"},
    "c": {"app": "nova"},
    "d": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("app=glance", ["a", "b"], id="eq"),
        pytest.param("app==glance", ["a", "b"], id="double-eq"),
        pytest.param("app!=glance", ["c", "d"], id="neq-includes-missing"),
        pytest.param("tier in (api, db)", ["a"], id="in"),
        pytest.param("tier notin (api)", ["b", "c", "d"], id="notin-includes-missing"),
        pytest.param("tier", ["a", "b"], id="exists"),
        pytest.param("!tier", ["c", "d"], id="not-exists"),
        pytest.param("app=glance,tier!=api", ["b"], id="and"),
        pytest.param("app in (glance,nova),!tier", ["c"], id="in-and-not-exists"),
        pytest.param("", ["a", "b", "c", "d"], id="empty"),
    ],
)
async def test_label_selectors(kube: Emulator, selector: str, expected: list[str]) -> None:
    for name, labels in PODS.items():
        await kube.client.create_pod("default", name, ip="127.0.0.9", labels=labels)
    found = await kube.client.list("pods", namespace="default", label_selector=selector)
    assert [p["metadata"]["name"] for p in found] == expected


async def test_field_selectors(kube: Emulator) -> None:
    await kube.client.create_pod("default", "a", ip="127.0.0.2")
    await kube.client.create_pod("default", "b", ip=None, phase="Pending")
    running = await kube.client.list("pods", field_selector="status.phase=Running")
    assert [p["metadata"]["name"] for p in running] == ["a"]
    named = await kube.client.list("pods", namespace="default", field_selector="metadata.name!=a")
    assert [p["metadata"]["name"] for p in named] == ["b"]


async def test_malformed_selector_is_400(kube: Emulator) -> None:
    with pytest.raises(ApiError) as err:
        await kube.client.list("pods", label_selector="app in glance")
    assert err.value.status == 400
