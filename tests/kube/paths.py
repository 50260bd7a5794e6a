"""URL paths of the Kubernetes API, parsed the way the API server routes them.

kmock 0.8's own parser answers 500 on ``/api/v1/namespaces`` and reads ``/api/v1/namespaces/x``
as "namespace x, no resource"; this one knows that ``namespaces`` is itself a resource.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiPath:
    """One request path; `group` is ``""`` for the core API, None for non-resource paths."""

    group: str | None = None
    version: str | None = None
    namespace: str | None = None
    plural: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def is_resource(self) -> bool:
        """Does the path address a collection or an object (not discovery)?"""
        return self.plural is not None


def parse_api_path(path: str) -> ApiPath:
    """Split ``/api/v1/namespaces/ns/pods/name/status`` and the like into its parts."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    elif parts[:1] == ["apis"] and len(parts) == 2:
        return ApiPath(group=parts[1])
    else:
        return ApiPath()
    if not rest:
        return ApiPath(group=group, version=version)
    namespace: str | None = None
    # "namespaces/x/status" and "namespaces/x/finalize" are subresources of a Namespace;
    # "namespaces/x/<plural>[/...]" is a namespaced collection or object.
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    subresource = "/".join(rest[2:]) or None
    return ApiPath(group, version, namespace, plural, name, subresource)
