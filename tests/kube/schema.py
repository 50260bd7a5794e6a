"""Structural-schema processing of custom objects, as the API server does it for a CRD version.

In order: unknown fields are pruned (unless ``x-kubernetes-preserve-unknown-fields`` or
``additionalProperties``), ``default`` values are applied, the OpenAPI constraints are checked
(type, required, enum, pattern, min/max, min/maxLength, min/maxItems) and then the CEL rules of
``x-kubernetes-validations`` (rules that use ``oldSelf`` only on update, and only where the old
object had a value). Every failure is a `FieldError`; `refusal` words them into the 422 the real
API server answers: ``Kind.group "name" is invalid: spec: Invalid value: "object": ...``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import celpy

from tests.kube.errors import Invalid

Schema = dict[str, Any]
_MISSING = object()


@dataclass(frozen=True)
class FieldError:
    """One refused field: its path, the Kubernetes cause reason, and the human detail."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTooLong
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


def _go(value: Any) -> str:
    """Render a value the way the API server's messages print it (Go %#v for JSON values)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def normalize(value: Any, schema: Schema, *, root: bool = False) -> Any:
    """Prune unknown fields and apply defaults; answer a new value."""
    if isinstance(value, dict) and schema.get("type", "object") == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        result: dict[str, Any] = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = copy.deepcopy(item)
            elif key in props:
                result[key] = normalize(item, props[key])
            elif isinstance(extra, dict):
                result[key] = normalize(item, extra)
            elif preserve or extra is True:
                result[key] = copy.deepcopy(item)
        for key, sub in props.items():
            if key not in result and "default" in sub:
                result[key] = normalize(copy.deepcopy(sub["default"]), sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [normalize(item, schema["items"]) for item in value]
    return copy.deepcopy(value)


def _constraints(value: Any, schema: Schema, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    expected = schema.get("type")
    actual = _json_type(value)
    if expected and actual != expected and not (expected == "number" and actual == "integer"):
        if value is None and schema.get("nullable"):
            return []
        detail = f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"'
        return [FieldError(path, "FieldValueInvalid", detail)]
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_go(v) for v in schema["enum"])
        errors.append(
            FieldError(
                path,
                "FieldValueNotSupported",
                f"Unsupported value: {_go(value)}: supported values: {supported}",
            )
        )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(
                FieldError(
                    path,
                    "FieldValueTooLong",
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            detail = f"Invalid value: {_go(value)}: {path} in body should be at least {schema['minLength']} chars long"  # noqa: E501 (the API server's wording)
            errors.append(FieldError(path, "FieldValueInvalid", detail))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            detail = (
                f"Invalid value: {_go(value)}: {path} in body should match '{schema['pattern']}'"
            )
            errors.append(FieldError(path, "FieldValueInvalid", detail))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            detail = f"Invalid value: {_go(value)}: {path} in body should be greater than or equal to {schema['minimum']}"  # noqa: E501 (the API server's wording)
            errors.append(FieldError(path, "FieldValueInvalid", detail))
        if "maximum" in schema and value > schema["maximum"]:
            detail = f"Invalid value: {_go(value)}: {path} in body should be less than or equal to {schema['maximum']}"  # noqa: E501 (the API server's wording)
            errors.append(FieldError(path, "FieldValueInvalid", detail))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                FieldError(
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                )
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            detail = f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"  # noqa: E501 (the API server's wording)
            errors.append(FieldError(path, "FieldValueInvalid", detail))
    return errors


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate(
    value: Any, schema: Schema, old: Any = _MISSING, *, path: str = ""
) -> list[FieldError]:
    """All OpenAPI and CEL failures of `value` (with `old`, the stored value, on update)."""
    errors = _constraints(value, schema, path) if path else []
    if errors:
        return errors  # a value of the wrong type is not looked into
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(FieldError(_join(path, key), "FieldValueRequired", "Required value"))
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is None or (not path and key == "metadata"):
                continue
            old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            errors += validate(item, sub, old_item, path=_join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], path=f"{path}[{index}]")
    errors += _cel(value, schema, old, path or "<root>")
    return errors


@functools.lru_cache(maxsize=256)
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel(value: Any, schema: Schema, old: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for check in schema.get("x-kubernetes-validations", []):
        rule: str = check["rule"]
        transition = "oldSelf" in rule
        if transition and old is _MISSING:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            ok = bool(_program(rule).evaluate(activation))
            message = check.get("message") or f"failed rule: {rule}"
        except Exception as e:  # a rule that cannot be evaluated refuses, as on the server
            ok, message = False, f"rule evaluation error: {e}"
        if not ok:
            shown = f'"{_json_type(value)}"'
            errors.append(
                FieldError(path, "FieldValueInvalid", f"Invalid value: {shown}: {message}")
            )
    return errors


def refusal(kind: str, group: str, name: str, errors: list[FieldError]) -> Invalid:
    """The 422 the API server answers for these errors, worded like the real one."""
    qualified = f"{kind}.{group}" if group else kind
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
    return Invalid(
        f'{qualified} "{name}" is invalid: {text}',
        details={"name": name, "group": group, "kind": kind, "causes": causes},
    )
