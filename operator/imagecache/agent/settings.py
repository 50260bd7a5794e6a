"""AgentSettings: every knob of the cache agent, from CLI flags or ``IMAGECACHE_*`` variables.

Built once in `main` (`load_settings`) and passed down; a flag wins over the variable. A bad
value raises `SettingsError` whose message is one line naming the setting (SPEC §2.1).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagecache import settings_cli
from imagecache.agent.peer_policy import Network, parse_networks
from imagecache.core.podtokens import agent_audience, is_service_account_username
from imagecache.core.sizes import parse_size
from imagecache.settings_cli import SettingsError as SettingsError
from imagecache.settings_cli import env_var, flag

ENV_PREFIX = "IMAGECACHE_"


class AgentSettings(BaseSettings):
    """The cache agent's settings (SPEC §2.1, docs/architecture.md)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    listen: str = Field(
        "127.0.0.1:9292", description="HOST:PORT to listen on (IPv6 as [::1]:9292)."
    )
    cache_dir: Path = Field(
        Path("./imagecache-data"), description="Cache root; created if missing."
    )
    upstream: str = Field(
        description="Where images come from: file:///dir, http(s)://base/, "
        "glance+http(s)://host:port, or glance:// (the image endpoint from the service "
        "catalog of --os-cloud) (required)."
    )
    upstream_token_file: Path | None = Field(
        None, description="File holding the token sent to a Glance upstream as X-Auth-Token."
    )
    token_file: Path | None = Field(
        None,
        description="File of accepted client tokens, one per line; re-read when it changes. "
        "Without it the API is open (loopback only, unless --insecure-no-auth).",
    )
    auth: Literal["token-file", "keystone", "kubernetes"] = Field(
        "token-file",
        description="How clients are authenticated: token-file (the tokens of --token-file), "
        "keystone (X-Auth-Token validated against Keystone with --os-cloud's credentials, "
        "one of --keystone-roles required) or kubernetes (a token accepted only after a "
        "Kubernetes TokenReview says it is --operator-service-account's, minted for the "
        "audience imagecache.dev/agent/<--pod-uid>); in both the tokens of --token-file are "
        "accepted too.",
    )
    pod_uid: str | None = Field(
        None,
        description="This pod's UID (downward API metadata.uid); auth kubernetes accepts only "
        "tokens minted for the audience imagecache.dev/agent/<pod-uid>.",
    )
    operator_service_account: str | None = Field(
        None,
        description="auth kubernetes: the only user whose tokens are accepted, "
        "system:serviceaccount:<namespace>:<name> (the operator's service account).",
    )
    kubeconfig: Path | None = Field(
        None,
        description="auth kubernetes: a kubeconfig for the TokenReview calls (server, CA, "
        "token or tokenFile); unset: the in-cluster service account.",
    )
    os_cloud: str | None = Field(
        None,
        description="Cloud name in clouds.yaml (OS_CLIENT_CONFIG_FILE or the usual places): "
        "its Keystone credentials authenticate the agent to a Glance upstream and validate "
        "client tokens in keystone mode.",
    )
    keystone_roles: str = Field(
        "admin",
        description="Comma-separated Keystone roles; in keystone mode a client token needs "
        "one of them.",
    )
    self_url: str | None = Field(
        None,
        description="This agent's node reference URL, answered by GET /v2/cache/nodes/{id}. "
        "Unset: http://$POD_IP:<port> when POD_IP is set, else http://<listen address>.",
    )
    insecure_no_auth: bool = Field(
        False, description="Allow listening on a non-loopback address without a token file."
    )
    workers: int = Field(2, ge=1, le=256, description="Downloads running at once.")
    max_size: int = Field(
        10 * 2**30, ge=1, description="Cache size limit in bytes; suffixes K/M/G/T(i) accepted."
    )
    stall_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds an upstream read may yield nothing before it is "
        "treated as a transient failure.",
    )
    retries: int = Field(3, ge=1, le=100, description="Attempts for transient upstream failures.")
    max_queue: int = Field(
        10_000,
        ge=1,
        description="Images waiting or downloading at most; a PUT of a new image beyond it is "
        "answered 429 with Retry-After. Each waiting image costs ~1 KiB of memory and a row.",
    )
    retry_backoff: float = Field(
        1.0, ge=0, description="Base of the exponential retry backoff, in seconds (with jitter)."
    )
    cache_on_read: bool = Field(
        True, description="A miss on GET /v2/images/{id}/file also queues the image."
    )
    peer_networks: str = Field(
        "",
        description="Fleet fill: comma-separated CIDRs (e.g. 10.244.0.0/16) of the peer agents a "
        "PUT may name in X-Image-Cache-Source (from the operator's credential only). Empty: the "
        "header is refused with 400.",
    )
    peer_serve_limit: int = Field(
        4,
        ge=1,
        le=1024,
        description="Fleet fill: other agents' reads of cached images served at once; beyond "
        "it a peer read is answered 429 with Retry-After.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged."
    )
    drain_timeout: float = Field(
        25.0,
        ge=0,
        description="Seconds SIGTERM waits for downloads before abandoning them "
        "(they resume at the next start).",
    )
    max_connections: int = Field(
        0,
        ge=0,
        description="Client connections served at once; at the limit the oldest connection "
        "still sending its headers is closed, else a new one is answered 503 (probes keep a "
        "small reserve). 0: from the fd limit, (RLIMIT_NOFILE - 64 - 4 x workers - 16) / 2, "
        "at most 4096.",
    )
    header_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds a new connection has to send its complete request head; "
        "slower clients (slowloris) are disconnected.",
    )
    room_wait_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a download waits for room under max_size (images being served "
        "or reserved by other downloads) before it fails with reason NoRoom; a later PUT "
        "tries again. The waiting download does not hold a worker.",
    )
    serve_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a client may go without reading a cached image being served "
        "before it is disconnected (the file is pinned, not evictable, while served).",
    )
    keystone_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds any one Keystone call (token validation, the agent's own "
        "authentication, the catalog) may take; then it fails (503 for a client, a "
        "transient upstream error for a download).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("max_size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return parse_size(value)
        return value

    @field_validator("peer_networks")
    @classmethod
    def _check_peer_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "glance":
            if parts.netloc or parts.path.strip("/"):
                raise ValueError("glance:// takes no host: use glance+http(s)://host:port")
        elif parts.scheme == "file":
            if not parts.path.startswith("/"):
                raise ValueError("file upstream needs an absolute path: file:///dir")
        elif parts.scheme in ("http", "https", "glance+http", "glance+https"):
            if not parts.hostname:
                raise ValueError(f"{parts.scheme} upstream needs a host")
        else:
            raise ValueError(
                "must be file:///dir, http(s)://base/, glance+http(s)://host:port or glance://"
            )
        return value

    @field_validator("keystone_roles")
    @classmethod
    def _check_roles(cls, value: str) -> str:
        if not [role for role in value.split(",") if role.strip()]:
            raise ValueError("needs at least one role")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_self_url(cls, data: Any) -> Any:
        """``self_url`` defaults to the pod's address (env ``POD_IP``), else the listen one."""
        if not isinstance(data, dict) or data.get("self_url"):
            return data
        listen = data.get("listen") or cls.model_fields["listen"].default
        try:
            host, port = split_listen(str(listen))
        except ValueError:
            return data  # the listen validator names the problem
        host = os.environ.get("POD_IP") or host
        if ":" in host:
            host = f"[{host}]"
        if ":" in host:  # an IPv6 address goes in brackets in a URL
            host = f"[{host.strip('[]')}]"
        return {**data, "self_url": f"http://{host}:{port}"}

    @model_validator(mode="after")
    def _check_keystone(self) -> AgentSettings:
        if self.auth == "keystone" and self.os_cloud is None:
            raise ValueError("os_cloud: auth keystone validates tokens with a cloud's credentials")
        scheme = urlsplit(self.upstream).scheme
        if scheme == "glance" and self.os_cloud is None:
            raise ValueError("os_cloud: upstream glance:// takes the endpoint from its catalog")
        if self.os_cloud is not None and self.upstream_token_file is not None:
            raise ValueError(
                "upstream_token_file: give either it or os_cloud (Keystone tokens), not both"
            )
        return self

    @model_validator(mode="after")
    def _check_kubernetes(self) -> AgentSettings:
        if self.auth != "kubernetes":
            return self
        if self.pod_uid is None:
            raise ValueError("pod_uid: auth kubernetes needs this pod's UID (downward API)")
        try:
            agent_audience(self.pod_uid)
        except ValueError as error:
            raise ValueError(f"pod_uid: {error}") from None
        account = self.operator_service_account
        if account is None or not is_service_account_username(account):
            raise ValueError(
                "operator_service_account: auth kubernetes needs the operator's service "
                "account as system:serviceaccount:<namespace>:<name>"
            )
        return self

    @model_validator(mode="after")
    def _refuse_open_network(self) -> AgentSettings:
        host, _ = split_listen(self.listen)
        open_api = self.token_file is None and self.auth == "token-file"
        if open_api and not self.insecure_no_auth and not _is_loopback(host):
            raise ValueError(
                f"listen: refusing to listen on non-loopback {host} without --token-file "
                "(pass --insecure-no-auth to allow it)"
            )
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def peers(self) -> tuple[Network, ...]:
        """`peer_networks` parsed (empty: no peer hint is accepted)."""
        return parse_networks(self.peer_networks)

    @property
    def roles(self) -> frozenset[str]:
        """`keystone_roles` as a set of role names."""
        return frozenset(role.strip() for role in self.keystone_roles.split(",") if role.strip())


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9292"`` → ``("127.0.0.1", 9292)``; ``"[::1]:80"`` → ``("::1", 80)``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _note(name: str, info: FieldInfo) -> str:
    default = "required" if info.is_required() else f"default: {info.default}"
    return f"[{default}; env {env_var(AgentSettings, name)}]"


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per setting, help text from the field descriptions."""
    return settings_cli.build_parser(
        AgentSettings,
        prog="imagecache-agent",
        description="The imagecache agent: a Glance-compatible image cache for one directory. "
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME>.",
        note=_note,
    )


def _describe(error: ErrorDetails) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["loc"]:
        name = str(error["loc"][0])
    else:  # a model-level check: its message starts with "<setting>: "
        name, _, message = message.partition(": ")
    if error["type"] == "missing":
        message = "is required"
    return f"invalid setting {name} ({flag(name)} / {env_var(AgentSettings, name)}): {message}"


def load_settings(argv: Sequence[str] | None = None) -> AgentSettings:
    """Parse flags (over environment variables); raise `SettingsError` with one clear line."""
    return settings_cli.load(AgentSettings, build_parser(), argv, _describe)
