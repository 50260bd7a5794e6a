"""Checks of the file-path settings before the agent serves (SPEC §2.1: bad settings stop the
process at start with one clear line naming the setting).

Pydantic checks a value's shape; whether a path names a usable file is only known on this
machine, so `check_paths` looks once, at start: every ``Path`` setting (the token files) must
be a readable regular file, a ``file://`` upstream an existing directory, and the cache
directory is created if missing. A token file that goes missing later is the token reader's
business (it then accepts no token); one that is missing at start is a typo, and an agent that
starts anyway on a non-loopback address would answer 401 to everyone.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from urllib.parse import urlsplit

from imagecache.agent.settings import AgentSettings
from imagecache.settings_cli import SettingsError, env_var, flag


def _invalid(name: str, message: str) -> SettingsError:
    return SettingsError(
        f"invalid setting {name} ({flag(name)} / {env_var(AgentSettings, name)}): {message}"
    )


def _is_path_field(annotation: object) -> bool:
    if annotation is Path:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Path in typing.get_args(annotation)
    return False


def path_settings() -> list[str]:
    """The names of the settings that hold a file path (the cache directory aside)."""
    return [
        name
        for name, info in AgentSettings.model_fields.items()
        if name != "cache_dir" and _is_path_field(info.annotation)
    ]


def check_paths(settings: AgentSettings) -> None:
    """Raise `SettingsError` naming the first path setting that cannot be used."""
    for name in path_settings():
        path = getattr(settings, name)
        if path is None:
            continue
        try:
            with Path(path).open("rb") as handle:
                handle.read(1)
        except IsADirectoryError:
            raise _invalid(name, f"{path} is a directory, not a file") from None
        except OSError as error:
            raise _invalid(name, f"cannot read {path}: {error.strerror or error}") from None
    upstream = urlsplit(settings.upstream)
    if upstream.scheme == "file" and not Path(upstream.path).is_dir():
        raise _invalid("upstream", f"{upstream.path} is not a directory")
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _invalid("cache_dir", f"cannot create {settings.cache_dir}: {error}") from None
    if not settings.cache_dir.is_dir():
        raise _invalid("cache_dir", f"{settings.cache_dir} is not a directory")
