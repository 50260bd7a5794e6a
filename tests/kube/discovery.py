"""Discovery documents: ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]``.

Served in the legacy (unaggregated) format; kubectl falls back to it when the answer's
Content-Type is plain JSON, and kopf reads nothing else. The OpenAPI documents are minimal
(no schemas): kubectl is told to skip client-side validation (``--validate=false``), and the
server validates anyway.
"""

from __future__ import annotations

from typing import Any

from tests.kube.resources import ResourceType


def version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-imagecache-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def core_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _versions_by_group(types: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in sorted(types, key=lambda t: (t.group, t.version)):
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    return groups


def group_list(types: list[ResourceType]) -> dict[str, Any]:
    groups = _versions_by_group(types)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, v) for g, v in groups.items()],
    }


def group(types: list[ResourceType], name: str) -> dict[str, Any] | None:
    versions = _versions_by_group(types).get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(
    types: list[ResourceType], group_name: str, version_name: str
) -> dict[str, Any] | None:
    served = [t for t in types if t.group == group_name and t.version == version_name]
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for rt in sorted(served, key=lambda t: t.plural):
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": rt.verbs,
                "shortNames": rt.short_names,
                "categories": rt.categories,
            }
        )
        for sub in sorted(rt.subresources):
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    group_version = f"{group_name}/{version_name}" if group_name else version_name
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
