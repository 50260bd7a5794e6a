"""Byte sizes: parsing settings like ``10G`` and formatting sizes for messages."""

from __future__ import annotations

import pytest

from imagecache.core.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1048576", 1048576, id="plain"),
        pytest.param(42, 42, id="int"),
        pytest.param("1K", 1024, id="K"),
        pytest.param("512M", 512 * 2**20, id="M"),
        pytest.param("10G", 10 * 2**30, id="G"),
        pytest.param("1Ti", 2**40, id="Ti"),
        pytest.param("2GiB", 2 * 2**30, id="GiB"),
        pytest.param("1.5g", 3 * 2**29, id="fraction-lowercase"),
        pytest.param(" 7 ", 7, id="spaces"),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("lots", id="word"),
        pytest.param("-1", id="negative"),
        pytest.param(-5, id="negative-int"),
        pytest.param("10Q", id="unknown-unit"),
        pytest.param("1 G B", id="spaced-unit"),
    ],
)
def test_parse_size_refuses(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1023, "1023 B", id="bytes"),
        pytest.param(1536, "1.5 KiB", id="kib"),
        pytest.param(3328599654, "3.1 GiB", id="gib"),
        pytest.param(2**50, "1024.0 TiB", id="huge"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
