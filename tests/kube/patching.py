"""The three patch formats of the Kubernetes API, over plain JSON-like data.

- JSON merge patch (RFC 7386): dicts merge, ``null`` deletes, anything else replaces.
- JSON patch (RFC 6902): add / remove / replace / move / copy / test on JSON pointers.
- Strategic merge patch (the subset kubectl uses on core objects): merge patch, plus lists of
  objects merged by their merge key (``name``, ``containerPort``, ``type``, ...), the
  ``$patch: delete|replace`` directives, ``metadata.finalizers`` merged as a set, and the
  ``$setElementOrder/...`` / ``$retainKeys`` hints dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.kube.errors import Invalid

_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "tolerations": "key",
}
_SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch; answer a new value (the inputs are not modified).

    Only the objects on the patch's paths are new: the rest of the answer is shared with
    `target` and `patch` (the store copies what it keeps), so a small patch on a large object
    costs the size of the patch, not of the object.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(
            f"the server rejected our request due to an error in our request: invalid JSON pointer {path!r}"  # noqa: E501 (the API server's wording)
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, list):
            current = current[int(part)]
        elif isinstance(current, dict):
            current = current[part]
        else:
            raise KeyError(part)
    return current


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    return parent[int(parts[-1])] if isinstance(parent, list) else parent[parts[-1]]


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        return parent.pop(int(parts[-1]))
    return parent.pop(parts[-1])


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        index = len(parent) if parts[-1] == "-" else int(parts[-1])
        if index > len(parent):
            raise IndexError(index)
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[parts[-1]] = value
    else:
        raise KeyError(parts[-1])
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch; answer a new value or raise `Invalid` like the server."""
    if not isinstance(operations, list):
        raise Invalid(
            "the server rejected our request due to an error in our request: json patch must be a list"  # noqa: E501 (the API server's wording)
        )
    doc = copy.deepcopy(target)
    for op in operations:
        try:
            kind, parts = op["op"], _pointer(op["path"])
            if kind == "add":
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(doc, parts)
            elif kind == "replace":
                _get(doc, parts)  # must exist
                if parts:
                    _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "move":
                value = _remove(doc, _pointer(op["from"]))
                doc = _add(doc, parts, value)
            elif kind == "copy":
                doc = _add(doc, parts, copy.deepcopy(_get(doc, _pointer(op["from"]))))
            elif kind == "test":
                if _get(doc, parts) != op["value"]:
                    raise Invalid(
                        f"the server rejected our request due to an error in our request: testing value {op['path']} failed"  # noqa: E501 (the API server's wording)
                    )
            else:
                raise Invalid(
                    f"the server rejected our request due to an error in our request: Unexpected kind: {kind}"  # noqa: E501 (the API server's wording)
                )
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise Invalid(
                f"the server rejected our request due to an error in our request: "
                f"doc is missing path: {op.get('path')!r}: {e!r}"
            ) from e
    return doc


def _merge_list(key: str, target: list[Any], patch: list[Any]) -> list[Any]:
    if key in _SET_LISTS:
        return list(dict.fromkeys([*target, *patch]))
    merge_key = _MERGE_KEYS.get(key)
    if merge_key is None or not all(isinstance(i, dict) for i in [*target, *patch]):
        return [i for i in copy.deepcopy(patch) if not (isinstance(i, dict) and i.get("$patch"))]
    if any(i.get("$patch") == "replace" for i in patch):
        return [i for i in copy.deepcopy(patch) if not i.get("$patch")]
    result = copy.deepcopy(target)
    for item in patch:
        index = next(
            (n for n, old in enumerate(result) if old.get(merge_key) == item.get(merge_key)), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (the subset described in the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name, []) if v not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, [], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result
