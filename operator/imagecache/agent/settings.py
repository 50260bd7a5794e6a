"""AgentSettings: every knob of the cache agent, from CLI flags or ``IMAGECACHE_*`` variables.

Built once in `main` (`load_settings`) and passed down; a flag wins over the variable. A bad
value raises `SettingsError` whose message is one line naming the setting (SPEC §2.1).
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagecache import settings_cli
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
        description="Where images come from: file:///dir, http(s)://base/ or "
        "glance+http(s)://host:port (required)."
    )
    upstream_token_file: Path | None = Field(
        None, description="File holding the token sent to a Glance upstream as X-Auth-Token."
    )
    token_file: Path | None = Field(
        None,
        description="File of accepted client tokens, one per line; re-read when it changes. "
        "Without it the API is open (loopback only, unless --insecure-no-auth).",
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
    retry_backoff: float = Field(
        1.0, ge=0, description="Base of the exponential retry backoff, in seconds (with jitter)."
    )
    cache_on_read: bool = Field(
        True, description="A miss on GET /v2/images/{id}/file also queues the image."
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

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "file":
            if not parts.path.startswith("/"):
                raise ValueError("file upstream needs an absolute path: file:///dir")
        elif parts.scheme in ("http", "https", "glance+http", "glance+https"):
            if not parts.hostname:
                raise ValueError(f"{parts.scheme} upstream needs a host")
        else:
            raise ValueError("must be file:///dir, http(s)://base/ or glance+http(s)://host:port")
        return value

    @model_validator(mode="after")
    def _refuse_open_network(self) -> AgentSettings:
        host, _ = split_listen(self.listen)
        if self.token_file is None and not self.insecure_no_auth and not _is_loopback(host):
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
