"""Image id rules (SPEC §2.3): accepted ids, refused ids, UUIDs for the Glance upstream."""

from __future__ import annotations

import pytest

from imagecache.core.ids import is_uuid, is_valid_image_id


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        pytest.param("2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5e", True, id="uuid"),
        pytest.param("a", True, id="one-char"),
        pytest.param("ubuntu-22.04_raw", True, id="dots-dashes-underscores"),
        pytest.param("a" * 128, True, id="128-chars"),
        pytest.param("a" * 129, False, id="129-chars"),
        pytest.param("", False, id="empty"),
        pytest.param("..", False, id="dot-dot"),
        pytest.param(".hidden", False, id="leading-dot"),
        pytest.param("-x", False, id="leading-dash"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("a%2Fb", False, id="percent"),
        pytest.param("a\x00b", False, id="nul"),
        pytest.param("abc\n", False, id="trailing-newline"),
        pytest.param("é", False, id="non-ascii"),
    ],
)
def test_is_valid_image_id(value: str, valid: bool) -> None:
    assert is_valid_image_id(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        pytest.param("2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5e", True, id="dashed"),
        pytest.param("2C4E8A1E6F0E4E7B9B8A3F1D2C3B4A5E", True, id="upper-undashed"),
        pytest.param("2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5", False, id="short"),
        pytest.param("not-a-uuid", False, id="name"),
        pytest.param("2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5g", False, id="non-hex"),
    ],
)
def test_is_uuid(value: str, valid: bool) -> None:
    assert is_uuid(value) is valid
