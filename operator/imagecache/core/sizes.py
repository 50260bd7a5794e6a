"""Byte sizes: parse ``10G``/``512Mi``/``1048576`` settings and print sizes for people."""

from __future__ import annotations

import re

_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)(B?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes for ``text``: a plain integer, or a number with K/M/G/T/P (optionally ``i``/``B``).

    Suffixes are binary (``1K`` = 1024 bytes, ``1Gi`` = ``1G`` = 2**30) as the agent sizes a disk.
    Raises `ValueError` with a short reason on anything else, including negative numbers.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError("size must not be negative")
        return text
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 512M, 10G, 1Ti)")
    number, unit, _, _ = match.groups()
    return int(float(number) * 1024 ** _UNITS[unit.upper()])


def format_size(size: int) -> str:
    """``3328599654`` → ``"3.1 GiB"``: for messages, never parsed back."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
