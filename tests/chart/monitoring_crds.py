"""Validate rendered ServiceMonitor, PodMonitor and PrometheusRule objects against their CRDs.

The schemas are the Prometheus Operator's own (tests/chart/crd_schemas, see its README). The
API server's strict field validation (kubectl's default) refuses unknown fields; a plain JSON
Schema validator would let them through, so every object schema with declared properties is
closed here (``additionalProperties: false``) unless the CRD keeps unknown fields.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
GROUP = "monitoring.coreos.com/"
KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def _closed(node: Any) -> Any:
    """The schema with every property-declaring object closed, as strict validation treats it."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    """A validator for one kind, from its vendored openAPIV3Schema."""
    data = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())
    assert data["kind"] == kind and data["apiVersion"] == "monitoring.coreos.com/v1"
    schema = _closed(data["openAPIV3Schema"])
    # metadata is checked by the API server itself, not by the CRD's schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one monitoring object, as 'path: message' lines."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
    assert obj["kind"] in KINDS, obj["kind"]
    return [
        f"{obj['kind']}/{obj['metadata']['name']} at {'.'.join(map(str, e.absolute_path))}: "
        f"{e.message}"
        for e in validator(obj["kind"]).iter_errors(obj)
    ]
