"""settings_cli: one flag per pydantic-settings field, flags over the environment, one-line
errors worded by the caller."""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagecache import settings_cli
from imagecache.agent import settings as agent_settings
from imagecache.controller import settings as operator_settings


class Demo(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="forbid")

    cache_dir: str = Field("here", description="Where.")
    size: int = Field(1, ge=1, description="How many.")
    loud: bool = Field(False, description="Shout.")
    tidy: bool = Field(True, description="Clean up.")


def _parser() -> argparse.ArgumentParser:
    return settings_cli.build_parser(
        Demo, prog="demo", description="A demo.", note=lambda name, _: f"<{name}>"
    )


def _describe(error: ErrorDetails) -> str:
    return f"bad {error['loc'][0]}: {error['msg']}"


def test_flag_and_env_var_names() -> None:
    assert settings_cli.flag("cache_dir") == "--cache-dir"
    assert settings_cli.env_var(Demo, "cache_dir") == "DEMO_CACHE_DIR"


def test_parser_has_one_flag_per_field() -> None:
    text = _parser().format_help()
    assert "--cache-dir CACHE_DIR" in text and "Where. <cache_dir>" in text
    assert "--loud " in text and "--no-loud" not in text  # false bool: a bare switch
    assert "--tidy, --no-tidy" in text  # true bool: also a --no- form
    assert vars(_parser().parse_args([])) == {}  # absent flags leave env and defaults alone
    assert vars(_parser().parse_args(["--loud", "--no-tidy", "--size", "3"])) == {
        "loud": True,
        "tidy": False,
        "size": "3",
    }


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_SIZE", "5")
    monkeypatch.setenv("DEMO_TIDY", "false")
    assert settings_cli.load(Demo, _parser(), [], _describe).size == 5
    loaded = settings_cli.load(Demo, _parser(), ["--size", "7", "--tidy"], _describe)
    assert (loaded.size, loaded.tidy) == (7, True)


def test_validation_error_becomes_one_line_settings_error() -> None:
    with pytest.raises(settings_cli.SettingsError) as caught:
        settings_cli.load(Demo, _parser(), ["--size", "0"], _describe)
    assert str(caught.value) == "bad size: Input should be greater than or equal to 1"
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, ValidationError)


def test_agent_and_operator_share_the_error_class() -> None:
    assert agent_settings.SettingsError is settings_cli.SettingsError
    assert operator_settings.SettingsError is settings_cli.SettingsError
