"""Server-side printing: the ``meta.k8s.io/v1 Table`` that ``kubectl get`` asks for.

Custom resources print their CRD's ``additionalPrinterColumns`` after ``Name``; built-in
resources print ``Name`` and ``Age`` (and a pod's ``Status`` and ``IP``). ``date`` columns are
rendered as ages (``12s``, ``5m``), as the API server does.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from tests.kube.resources import ResourceType

TABLE_MEDIA = "as=Table"


def wants_table(accept: str) -> bool:
    """Does the Accept header ask for server-side printing?"""
    return TABLE_MEDIA in accept.replace(" ", "")


def _age(timestamp: str | None, now: datetime.datetime) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def json_path(obj: Any, path: str) -> Any:
    """Evaluate a simple printer-column JSONPath (``.a.b``, ``.a[0].b``); None when absent."""
    current = obj
    for name, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        if name:
            current = current.get(name) if isinstance(current, dict) else None
        else:
            current = (
                current[int(index)]
                if isinstance(current, list) and int(index) < len(current)
                else None
            )
        if current is None:
            return None
    return current


def _columns(rt: ResourceType) -> list[dict[str, Any]]:
    name = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name",
        "priority": 0,
    }
    if rt.custom:
        cols = [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
                "jsonPath": c["jsonPath"],
            }
            for c in rt.printer_columns
        ]
        if not rt.printer_columns:
            cols = [
                {
                    "name": "Age",
                    "type": "date",
                    "format": "",
                    "description": "",
                    "priority": 0,
                    "jsonPath": ".metadata.creationTimestamp",
                }
            ]
        return [name, *cols]
    extra = []
    if rt.kind == "Pod":
        extra = [
            {
                "name": "Status",
                "type": "string",
                "format": "",
                "description": "",
                "priority": 0,
                "jsonPath": ".status.phase",
            },
            {
                "name": "IP",
                "type": "string",
                "format": "",
                "description": "",
                "priority": 1,
                "jsonPath": ".status.podIP",
            },
            {
                "name": "Node",
                "type": "string",
                "format": "",
                "description": "",
                "priority": 1,
                "jsonPath": ".spec.nodeName",
            },
        ]
    age = {
        "name": "Age",
        "type": "date",
        "format": "",
        "description": "",
        "priority": 0,
        "jsonPath": ".metadata.creationTimestamp",
    }
    return [name, *extra, age]


def _cell(obj: dict[str, Any], column: dict[str, Any], now: datetime.datetime) -> Any:
    if column.get("format") == "name":
        return obj["metadata"]["name"]
    value = json_path(obj, column["jsonPath"])
    if column["type"] == "date":
        return _age(value, now) if isinstance(value, str) else "<unknown>"
    if value is None:
        return None
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value


def to_table(
    rt: ResourceType, objects: list[dict[str, Any]], *, resource_version: str, include_object: str
) -> dict[str, Any]:
    """The Table for these objects (``includeObject``: None, Metadata (default) or Object)."""
    now = datetime.datetime.now(datetime.UTC)
    columns = _columns(rt)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [_cell(obj, c, now) for c in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    definitions = [{k: v for k, v in c.items() if k != "jsonPath"} for c in columns]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
