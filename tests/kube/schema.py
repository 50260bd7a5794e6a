"""Structural-schema processing of custom objects, as the API server does it for a CRD version.

In order: unknown fields are pruned (unless ``x-kubernetes-preserve-unknown-fields`` or
``additionalProperties``), ``default`` values are applied, the OpenAPI constraints are checked
(type, required, enum, pattern, min/max, min/maxLength, min/maxItems) and then the CEL rules of
``x-kubernetes-validations`` (rules that use ``oldSelf`` only on update, and only where the old
object had a value). Every failure is a `FieldError`; `refusal` words them into the 422 the real
API server answers: ``Kind.group "name" is invalid: spec: Invalid value: "object": ...``.

A `Validator` does all this for one CRD version; it is built once, when the version is served
(its schema compiled into a tree of nodes, its CEL rules compiled), not per request.
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

    The schema is compiled into a tree of `_Node` (each node's keywords looked up once, its CEL
    rules compiled once), used by every write of that version; a changed CRD registers new
    types with new validators (`resources.types_from_crd`), so nothing of the old schema is
    carried over. The rules run on cel-rust (``common-expression-language``): a rule's
    evaluation costs microseconds, where an interpreter in Python took most of a write.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.programs: dict[str, cel.Program | Exception] = {}
        """Each rule compiled, or why it does not compile (reported when it is evaluated)."""
        self._root = _Node(schema, self.programs)

    def normalize(self, obj: Any) -> Any:
        """Prune unknown fields and apply defaults; answer a new value (nothing shared with
        `obj` or the schema's defaults: the store keeps what this answers)."""
        return self._root.normalize(obj, root=True)

    def validate(self, value: Any, old: Any = _MISSING) -> list[FieldError]:
        """All OpenAPI and CEL failures of `value` (with `old`, the stored object, on update)."""
        return self._root.validate(value, old, "")


_BOUNDS = (
    "enum",
    "maxLength",
    "minLength",
    "pattern",
    "minimum",
    "maximum",
    "maxItems",
    "minItems",
)
_ROOT_KEYS = frozenset({"apiVersion", "kind", "metadata"})


class _Node:
    """One node of a structural schema, with what pruning, defaulting and validation need."""

    def __init__(self, schema: Any, programs: dict[str, cel.Program | Exception]) -> None:
        self.schema: Schema = schema if isinstance(schema, dict) else {}
        schema = self.schema
        self.type: str | None = schema.get("type")
        self.is_object = schema.get("type", "object") == "object"
        self.bounded = any(key in schema for key in _BOUNDS)
        props = schema.get("properties", {})
        self.props = {key: _Node(sub, programs) for key, sub in props.items()}
        extra = schema.get("additionalProperties")
        self.extra = _Node(extra, programs) if isinstance(extra, dict) else None
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        self.keeps_unknown = bool(preserve) or extra is True
        items = schema.get("items")
        self.items = _Node(items, programs) if isinstance(items, dict) else None
        self.defaults = [
            (key, sub["default"], self.props[key])
            for key, sub in props.items()
            if isinstance(sub, dict) and "default" in sub
        ]
        self.required: list[str] = list(schema.get("required", []))
        self.checks: list[tuple[str, Schema, bool]] = []
        for check in schema.get("x-kubernetes-validations", []):
            rule = str(check["rule"])
            if rule not in programs:
                programs[rule] = _compile(rule)
            self.checks.append((rule, check, "oldSelf" in rule))
        self.programs = programs

    def normalize(self, value: Any, *, root: bool = False) -> Any:
        if self.is_object and isinstance(value, dict):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if root and key in _ROOT_KEYS:
                    result[key] = copy_json(item)
                    continue
                node = self.props.get(key)
                if node is not None:
                    result[key] = node.normalize(item)
                elif self.extra is not None:
                    result[key] = self.extra.normalize(item)
                elif self.keeps_unknown:
                    result[key] = copy_json(item)
            for key, default, node in self.defaults:
                if key not in result:
                    result[key] = node.normalize(default)
            return result
        if self.items is not None and isinstance(value, list):
            return [self.items.normalize(item) for item in value]
        return copy_json(value)

    def validate(self, value: Any, old: Any, path: str) -> list[FieldError]:
        errors: list[FieldError] = []
        if path and (self.bounded or (self.type is not None and _json_type(value) != self.type)):
            errors = _constraints(value, self.schema, path)
            if errors:
                return errors  # a value of the wrong type is not looked into
        if isinstance(value, dict):
            for key in self.required:
                if key not in value:
                    errors.append(
                        FieldError(_join(path, key), "FieldValueRequired", "Required value")
                    )
            for key, item in value.items():
                node = self.props.get(key, self.extra)
                if node is None or (not path and key == "metadata"):
                    continue
                old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                errors += node.validate(item, old_item, _join(path, key))
        elif isinstance(value, list) and self.items is not None:
            for index, item in enumerate(value):
                errors += self.items.validate(item, _MISSING, f"{path}[{index}]")
        if self.checks:
            errors += self._cel(value, old, path or "<root>")
        return errors

    def _cel(self, value: Any, old: Any, path: str) -> list[FieldError]:
        errors: list[FieldError] = []
        for rule, check, transition in self.checks:
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
