"""The resource types the emulator serves: kmock's bundled built-ins plus CRDs registered live.

A `ResourceType` is what discovery, routing, printing and validation need to know about one
``group/version/plural``; `types_from_crd` turns a CustomResourceDefinition into them.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

import kmock

from tests.kube.schema import Schema, Validator

TypeKey = tuple[str, str, str]  # group, version, plural


@dataclass
class ResourceType:
    """One served ``group/version/plural`` and everything the emulator knows about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    subresources: set[str] = field(default_factory=set)
    schema: Schema | None = None  # openAPIV3Schema, for custom resources only
    validator: Validator | None = None  # the schema prepared once (compiled CEL, verdicts)
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    custom: bool = False

    @property
    def key(self) -> TypeKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as the API server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


@functools.cache
def _bundled() -> kmock.ResourcesArray:
    bundled = kmock.ResourcesArray()
    with warnings.catch_warnings():
        # kmock 0.8 reads its bundle with importlib.resources.read_binary, deprecated since 3.11
        # (an error under filterwarnings = error).
        warnings.simplefilter("ignore", DeprecationWarning)
        bundled.load_bundled()
    return bundled


def builtin_types() -> list[ResourceType]:
    """The built-in resources bundled with kmock (a recent K3s cluster's discovery)."""
    bundled = _bundled()
    types = []
    for res in bundled:
        info = bundled[res]
        types.append(
            ResourceType(
                group=res.group or "",
                version=res.version or "v1",
                plural=res.plural or "",
                kind=info.kind or "",
                namespaced=bool(info.namespaced),
                singular=info.singular or "",
                short_names=sorted(info.shortnames),
                categories=sorted(info.categories),
                verbs=sorted(info.verbs),
                subresources=set(info.subresources),
            )
        )
    return types


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd["spec"]
    names = spec["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = version.get("schema", {}).get("openAPIV3Schema")
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=list(names.get("shortNames", [])),
                categories=list(names.get("categories", [])),
                verbs=[
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ],
                subresources=set(version.get("subresources", {}).keys()),
                schema=schema,
                validator=None if schema is None else Validator(schema),
                printer_columns=list(version.get("additionalPrinterColumns", [])),
                custom=True,
            )
        )
    return types
