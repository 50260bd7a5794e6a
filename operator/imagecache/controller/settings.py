"""OperatorSettings: the operator's one typed settings object (SPEC §4.2, docs/architecture.md).

Each field comes from a CLI flag (``--poll-interval 2``) or an environment variable with the
prefix ``IMAGECACHE_OPERATOR_`` (``IMAGECACHE_OPERATOR_POLL_INTERVAL=2``); a flag wins. Built once
in `main` and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from imagecache import settings_cli
from imagecache.settings_cli import SettingsError as SettingsError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_lease_namespace() -> str:
    """The pod's namespace (downward API ``POD_NAMESPACE``, else the service account), else
    ``default``."""
    namespace = os.environ.get("POD_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError:
        namespace = ""
    return namespace or "default"


def lease_identity() -> str:
    """This replica's name in the Lease: ``POD_NAME`` (else the hostname) and a random suffix."""
    name = os.environ.get("POD_NAME", "").strip() or socket.gethostname()
    return f"{name}-{secrets.token_hex(4)}"


class OperatorSettings(BaseSettings):
    """Everything the operator can be told. Times are in seconds."""

    model_config = SettingsConfigDict(env_prefix="IMAGECACHE_OPERATOR_", extra="forbid")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces to watch; empty watches the whole cluster.",
    )
    agent_token_file: Path | None = Field(
        default=None,
        description="File holding the token sent to agents as X-Auth-Token; re-read on change "
        "(agent_auth token-file).",
    )
    agent_auth: Literal["token-file", "kubernetes"] = Field(
        default="token-file",
        description="What the operator sends agents: token-file (the token of "
        "agent_token_file, the same for every agent) or kubernetes (for each pod a short-lived "
        "token of service_account from the TokenRequest API, audience "
        "imagecache.dev/agent/<pod-uid>, which only that pod's agent accepts; for fan-out also "
        "imagecache.dev/peer/<pod-uid>, which that agent accepts for peer reads only).",
    )
    service_account: str | None = Field(
        default=None,
        description="agent_auth kubernetes: the operator's own service account (downward API "
        "spec.serviceAccountName), whose tokens it requests.",
    )
    service_account_namespace: str = Field(
        default_factory=default_lease_namespace,
        description="Namespace of service_account: POD_NAMESPACE, else the service account's, "
        "else default.",
    )
    agent_token_seconds: int = Field(
        default=3600,
        ge=600,
        le=86400,
        description="agent_auth kubernetes: lifetime asked for each per-pod token (renewed "
        "after four fifths of it).",
    )
    agent_port: int = Field(
        default=9292,
        ge=1,
        le=65535,
        description="Agent port when neither spec.port nor the pod annotation gives one.",
    )
    poll_interval: float = Field(
        default=2.0, gt=0, description="Agent status polling while a request is not terminal."
    )
    recheck_interval: float = Field(
        default=300.0, gt=0, description="Re-check of Cached (and Failed) requests."
    )
    request_timeout: float = Field(default=10.0, gt=0, description="One HTTP request to an agent.")
    max_concurrency: int = Field(default=64, ge=1, description="Agent requests in flight at once.")
    metrics_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port of /metrics and /healthz (0: pick a free port, for tests).",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address /metrics listens on.")
    retry_backoff: float = Field(default=1.0, gt=0, description="Base of the retry backoff.")
    retry_backoff_cap: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    evict_timeout: float = Field(
        default=60.0,
        ge=0,
        description="Give up evicting from an unreachable agent this long after deletion began.",
    )
    status_interval: float = Field(
        default=5.0,
        ge=0,
        description="Progress-only status changes are written at most this often per object.",
    )
    queue_position_interval: float = Field(
        default=30.0,
        ge=0,
        description="While a request is Queued, its progress-only changes (queue position) are "
        "written at most this often per object: every image an agent finishes moves every "
        "request queued behind it.",
    )
    max_poll_stretch: float = Field(
        default=8.0,
        ge=1,
        description="While the operator is saturated (its event loop lags or its CPU is busy), "
        "agent polls are spaced "
        "up to this many poll intervals apart, so watch events and writes go first "
        "(1: never stretched).",
    )
    resync_interval: float = Field(
        default=600.0,
        gt=0,
        description="Every this often, requests and pods are listed and compared with what the "
        "watch showed (objects deleted while a watch was down are forgotten).",
    )
    leader_election: bool = Field(
        default=False,
        description="Elect one active replica on a coordination.k8s.io/v1 Lease.",
    )
    lease_name: str = Field(default="imagecache-operator", description="Name of the Lease.")
    lease_namespace: str = Field(
        default_factory=default_lease_namespace,
        description="Namespace of the Lease: POD_NAMESPACE, else the service account's, "
        "else default.",
    )
    lease_duration: float = Field(
        default=15.0,
        gt=0,
        description="A standby takes over this long after the Lease last changed (whole "
        "seconds in the Lease, rounded up).",
    )
    lease_renew_deadline: float = Field(
        default=10.0,
        gt=0,
        description="The leader stops reconciling when it could not renew for this long.",
    )
    lease_retry_period: float = Field(
        default=2.0, gt=0, description="Time between two tries to acquire or renew the Lease."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _kubernetes_auth_needs_an_account(self) -> OperatorSettings:
        if self.agent_auth == "kubernetes" and not self.service_account:
            raise ValueError(
                "service_account: agent_auth kubernetes requests tokens of the operator's own "
                "service account; give its name"
            )
        return self

    @model_validator(mode="after")
    def _lease_timings_in_order(self) -> OperatorSettings:
        if not self.lease_retry_period < self.lease_renew_deadline < self.lease_duration:
            raise ValueError(
                "lease timings need lease_retry_period < lease_renew_deadline < lease_duration"
            )
        return self


def _note(name: str, info: FieldInfo) -> str:
    return f"(default: {info.get_default(call_default_factory=True) or 'none'})"


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per setting, documented from the field descriptions."""
    return settings_cli.build_parser(
        OperatorSettings,
        prog="imagecache-operator",
        description="The imagecache operator: reconciles ImageCacheRequest objects. Every flag "
        "can also be set as IMAGECACHE_OPERATOR_<NAME>.",
        note=_note,
    )


def _describe(error: ErrorDetails) -> str:
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"invalid setting {name}: {error['msg']}"


def parse_settings(argv: Sequence[str] | None = None) -> OperatorSettings:
    """Settings from flags (winning) and the environment; `SettingsError` names a bad one."""
    return settings_cli.load(OperatorSettings, build_parser(), argv, _describe)
