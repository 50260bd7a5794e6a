"""JSON documents from upstreams, parsed by one rule for every source (SPEC §2.10).

A Glance image document, a file upstream's sidecar and the image index's documents all go
through `load_document`: at most `METADATA_LIMIT` bytes, nested at most `MAX_DEPTH` levels, no
``NaN``/``Infinity``. Anything else is a `BadUpstreamAnswer` with a reason
(``metadata_too_large``, ``bad_metadata``) — never a `RecursionError` from the parser, nor a
document that parses but later breaks ``json.dumps`` when it is passed on.
"""

from __future__ import annotations

from typing import Any

from imagecache.agent.upstream.port import METADATA_LIMIT, BadUpstreamAnswer
from imagecache.core.strict_json import JsonTooDeep, strict_loads

MAX_DEPTH = 32  # Glance's documents nest 3 deep; properties a few more


def load_document(data: bytes | str, *, source: str) -> Any:
    """The JSON value of `data` (from `source`, named in errors), within the bounds above."""
    if len(data) > METADATA_LIMIT:
        raise BadUpstreamAnswer(
            f"{source} is larger than {METADATA_LIMIT} bytes", reason="metadata_too_large"
        )
    try:
        doc = strict_loads(data)
    except JsonTooDeep as error:
        raise _too_deep(source) from error
    except ValueError as error:
        raise BadUpstreamAnswer(
            f"{source} is not valid JSON: {str(error)[:120]}", reason="bad_metadata"
        ) from error
    if _deeper_than(doc, MAX_DEPTH):
        raise _too_deep(source)
    return doc


def _too_deep(source: str) -> BadUpstreamAnswer:
    return BadUpstreamAnswer(
        f"{source} is nested deeper than {MAX_DEPTH} levels", reason="bad_metadata"
    )


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
