"""Command lines for pydantic settings: one ``--flag`` per field, winning over the environment.

The agent (`imagecache.agent.settings`) and the operator (`imagecache.controller.settings`) each
describe their knobs as a pydantic-settings model whose ``env_prefix`` names the environment
variables. `build_parser` turns such a model into an `argparse` parser, and `load` parses a
command line into the model: the given flags become init arguments, which pydantic-settings
ranks above the environment, so a flag wins over its variable. A `ValidationError` becomes a
`SettingsError` whose one-line message the caller words from the first error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(ValueError):
    """Settings that cannot run; the message is one line naming the setting."""


def flag(name: str) -> str:
    """The flag of setting `name`: ``cache_dir`` → ``--cache-dir``."""
    return "--" + name.replace("_", "-")


def env_var(model_cls: type[BaseSettings], name: str) -> str:
    """The environment variable of setting `name`: the model's ``env_prefix`` then ``NAME``."""
    return f"{model_cls.model_config.get('env_prefix', '')}{name.upper()}"


def build_parser(
    model_cls: type[BaseSettings],
    *,
    prog: str,
    description: str,
    note: Callable[[str, FieldInfo], str],
) -> argparse.ArgumentParser:
    """A parser with one flag per field of `model_cls`, in field order.

    Each flag's help is the field's description, a space, then ``note(name, field)`` (the
    default, the variable: each caller words its own). A `bool` field defaulting to false is a
    bare switch (``--insecure-no-auth``); any other `bool` also gets a ``--no-`` form; every
    other field takes one value, metavar ``NAME``, left to pydantic to convert and check. A flag
    not given is absent from the parsed namespace, so the variable or the default applies.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    for name, info in model_cls.model_fields.items():
        text = f"{info.description} {note(name, info)}"
        if info.annotation is bool and info.default is False:
            parser.add_argument(flag(name), action="store_const", const=True, help=text)
        elif info.annotation is bool:
            parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag(name), dest=name, metavar=name.upper(), help=text)
    return parser


def load(
    model_cls: type[SettingsT],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    describe: Callable[[ErrorDetails], str],
) -> SettingsT:
    """Parse `argv` (``None``: ``sys.argv[1:]``) with `parser` into a `model_cls`.

    A flag wins over the environment, which wins over the default. Bad flag syntax exits through
    argparse (status 2, usage on stderr); a value pydantic refuses raises `SettingsError` whose
    message is ``describe(first_error)``.
    """
    flags = vars(parser.parse_args(argv))
    try:
        return model_cls(**flags)
    except ValidationError as error:
        raise SettingsError(describe(error.errors()[0])) from error
