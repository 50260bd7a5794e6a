"""Image id rules (SPEC §2.3): which ids the agent accepts, and which the Glance upstream does.

Anything that does not match is answered like an unknown image, so a bad id can never name a
path outside the cache directory.
"""

from __future__ import annotations

import re

IMAGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_IMAGE_ID = re.compile(IMAGE_ID_PATTERN)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def is_valid_image_id(value: str) -> bool:
    """True for ids the agent accepts: 1-128 of ``[A-Za-z0-9._-]``, starting alphanumeric.

    ``.`` and ``..`` fail the first-character rule; `fullmatch` refuses a trailing newline.
    """
    return _IMAGE_ID.fullmatch(value) is not None


def is_uuid(value: str) -> bool:
    """True for Glance-style UUIDs (with or without dashes, any case)."""
    return _UUID.fullmatch(value) is not None
