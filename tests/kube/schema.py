"""Structural-schema processing of custom objects, as the API server does it for a CRD version.

In order: unknown fields are pruned (unless ``x-kubernetes-preserve-unknown-fields`` or
``additionalProperties``), ``default`` values are applied, the OpenAPI constraints are checked
(type, required, enum, pattern, min/max, min/maxLength, min/maxItems) and then the CEL rules of
``x-kubernetes-validations`` (rules that use ``oldSelf`` only on update, and only where the old
object had a value). Every failure is a `FieldError`; `refusal` words them into the 422 the real
API server answers: ``Kind.group "name" is invalid: spec: Invalid value: "object": ...``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import cel

from tests.kube.errors import Invalid
from tests.kube.jsondata import copy_json

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
    """Prune unknown fields and apply defaults; answer a new value (nothing shared with
    `value` or the schema's defaults: the store keeps what this answers)."""
    if isinstance(value, dict) and schema.get("type", "object") == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        result: dict[str, Any] = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = copy_json(item)
            elif key in props:
                result[key] = normalize(item, props[key])
            elif isinstance(extra, dict):
                result[key] = normalize(item, extra)
            elif preserve or extra is True:
                result[key] = copy_json(item)
        for key, sub in props.items():
            if key not in result and "default" in sub:
                result[key] = normalize(sub["default"], sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [normalize(item, schema["items"]) for item in value]
    return copy_json(value)


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


class Validator:
    """One CRD version's structural schema, prepared once when the version is registered.

    Its CEL rules are compiled here, once per CRD version, not per request; a changed CRD
    registers new types with new validators (`resources.types_from_crd`), so nothing of the old
    schema is carried over. The rules run on cel-rust (``common-expression-language``): a
    rule's evaluation costs microseconds, where an interpreter in Python took most of a write.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.programs: dict[str, cel.Program | Exception] = {}
        """Each rule compiled, or why it does not compile (reported when it is evaluated)."""
        for rule in _rules(schema):
            if rule not in self.programs:
                self.programs[rule] = _compile(rule)

    def normalize(self, obj: Any) -> Any:
        """The object pruned and defaulted (a new value; see `normalize`)."""
        return normalize(obj, self.schema, root=True)

    def validate(self, value: Any, old: Any = _MISSING) -> list[FieldError]:
        """All OpenAPI and CEL failures of `value` (with `old`, the stored object, on update)."""
        return self._validate(value, self.schema, old, "")

    def _validate(self, value: Any, schema: Schema, old: Any, path: str) -> list[FieldError]:
        errors = _constraints(value, schema, path) if path else []
        if errors:
            return errors  # a value of the wrong type is not looked into
        if isinstance(value, dict):
            props: dict[str, Schema] = schema.get("properties", {})
            for key in schema.get("required", []):
                if key not in value:
                    errors.append(
                        FieldError(_join(path, key), "FieldValueRequired", "Required value")
                    )
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                if sub is None or (not path and key == "metadata"):
                    continue
                old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                errors += self._validate(item, sub, old_item, _join(path, key))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                errors += self._validate(item, schema["items"], _MISSING, f"{path}[{index}]")
        checks = schema.get("x-kubernetes-validations")
        if checks:
            errors += self._cel(value, checks, old, path or "<root>")
        return errors

    def _cel(self, value: Any, checks: list[Schema], old: Any, path: str) -> list[FieldError]:
        errors: list[FieldError] = []
        for check in checks:
            rule: str = check["rule"]
            transition = "oldSelf" in rule
            if transition and old is _MISSING:
                continue
            activation = {"self": value, "oldSelf": old} if transition else {"self": value}
            program = self.programs[rule]
            try:
                if isinstance(program, Exception):
                    raise program
                ok = program.execute(activation) is True
                message = check.get("message") or f"failed rule: {rule}"
            except Exception as e:  # a rule that cannot be evaluated refuses, as on the server
                ok, message = False, f"rule evaluation error: {e}"
            if not ok:
                shown = f'"{_json_type(value)}"'
                errors.append(
                    FieldError(path, "FieldValueInvalid", f"Invalid value: {shown}: {message}")
                )
        return errors


def _rules(schema: Any) -> list[str]:
    """Every CEL rule in a schema, depth first."""
    if isinstance(schema, list):
        return [rule for item in schema for rule in _rules(item)]
    if not isinstance(schema, dict):
        return []
    rules = [
        str(check["rule"])
        for check in schema.get("x-kubernetes-validations", [])
        if isinstance(check, dict) and "rule" in check
    ]
    for key, sub in schema.items():
        if key not in ("x-kubernetes-validations", "default", "enum", "example"):
            rules += _rules(sub)
    return rules


def _compile(rule: str) -> cel.Program | Exception:
    try:
        return cel.compile(rule)
    except Exception as e:
        return e


def refusal(kind: str, group: str, name: str, errors: list[FieldError]) -> Invalid:
    """The 422 the API server answers for these errors, worded like the real one."""
    qualified = f"{kind}.{group}" if group else kind
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
    return Invalid(
        f'{qualified} "{name}" is invalid: {text}',
        details={"name": name, "group": group, "kind": kind, "causes": causes},
    )
