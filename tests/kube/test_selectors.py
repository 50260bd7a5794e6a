"""Label and field selectors on list (and the same matchers on watch, see test_watch.py), driven
with the official ``kubernetes`` client.

Covers: equality (=, ==, !=), set-based in / notin, exists and !exists, several terms, field
selectors over metadata and status, and a malformed selector answered with 400.
"""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.kube.official import create_pod

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
def test_label_selectors(k8s: ApiClient, selector: str, expected: list[str]) -> None:
    for name, labels in PODS.items():
        create_pod(k8s, name, ip="127.0.0.9", labels=labels)
    found = CoreV1Api(k8s).list_namespaced_pod("default", label_selector=selector)
    assert [p.metadata.name for p in found.items] == expected


def test_field_selectors(k8s: ApiClient) -> None:
    create_pod(k8s, "a", ip="127.0.0.2")
    create_pod(k8s, "b", ip=None, phase="Pending")
    core = CoreV1Api(k8s)
    running = core.list_pod_for_all_namespaces(field_selector="status.phase=Running")
    assert [p.metadata.name for p in running.items] == ["a"]
    named = core.list_namespaced_pod("default", field_selector="metadata.name!=a")
    assert [p.metadata.name for p in named.items] == ["b"]


def test_malformed_selector_is_400(k8s: ApiClient) -> None:
    with pytest.raises(ApiException) as err:
        CoreV1Api(k8s).list_pod_for_all_namespaces(label_selector="app in glance")
    assert err.value.status == 400
