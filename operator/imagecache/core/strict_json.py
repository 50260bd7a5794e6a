"""JSON text from the network, parsed strictly (pure): the agent's upstream documents and the
operator's agent listings read it the same way.

`strict_loads` is ``json.loads`` that refuses ``NaN``/``Infinity`` (Python accepts them; no
other JSON reader does, and a document holding one breaks ``json.dumps`` when passed on) and
turns the parser's `RecursionError` on absurd nesting into `JsonTooDeep`. Every failure is a
`ValueError`; callers put their own bound on the size before, and name the source in their
own error.
"""

from __future__ import annotations

import json
from typing import Any


class JsonTooDeep(ValueError):
    """Nested deeper than the parser can follow."""


def strict_loads(data: bytes | str) -> Any:
    """The JSON value of `data`; `ValueError` (`JsonTooDeep` for nesting) when it is none."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError as error:
        raise JsonTooDeep("nested too deep") from error


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
