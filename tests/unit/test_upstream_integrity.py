"""The upstream's integrity rules as plain functions (issue 16, items 1-3 and 5).

Covers: `load_document`, the one JSON rule (size, depth, NaN, syntax) every metadata source
uses; `range_fits`, when a 206 holds exactly the bytes asked for; `validator_of`, which
validator a resume's ``If-Range`` carries (strong ETag, else Last-Modified, never a weak ETag
or header junk); `segment`, an id as one quoted path segment.
"""

from __future__ import annotations

import pytest

from imagecache.agent.upstream.documents import MAX_DEPTH, load_document
from imagecache.agent.upstream.http import range_fits, segment, validator_of
from imagecache.agent.upstream.port import METADATA_LIMIT, BadUpstreamAnswer


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_list(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param('{"size": 3, "status": "active"}', {"size": 3, "status": "active"}, id="doc"),
        pytest.param(nested(MAX_DEPTH), nested_list(MAX_DEPTH), id="at-the-depth-bound"),
        pytest.param('{"a": {"b": [1, {"c": null}]}}', {"a": {"b": [1, {"c": None}]}}, id="mixed"),
    ],
)
def test_documents_within_the_rule_load(text: str, value: object) -> None:
    assert load_document(text.encode(), source="doc") == value


@pytest.mark.parametrize(
    ("text", "reason", "says"),
    [
        pytest.param(nested(MAX_DEPTH + 1), "bad_metadata", "nested deeper than 32", id="depth+1"),
        pytest.param(nested(100_000), "bad_metadata", "nested deeper than 32", id="recursion"),
        pytest.param('{"a": NaN}', "bad_metadata", "not valid JSON", id="nan"),
        pytest.param('{"a": -Infinity}', "bad_metadata", "not valid JSON", id="infinity"),
        pytest.param('{"a": ', "bad_metadata", "not valid JSON", id="cut"),
        pytest.param("\xff", "bad_metadata", "not valid JSON", id="not-utf8"),
        pytest.param(" " * METADATA_LIMIT + "{}", "metadata_too_large", "larger than", id="big"),
    ],
)
def test_documents_outside_the_rule_are_a_bad_answer(text: str, reason: str, says: str) -> None:
    data = text.encode("latin-1") if text == "\xff" else text.encode()
    with pytest.raises(BadUpstreamAnswer) as caught:
        load_document(data, source="sidecar x.json")
    assert caught.value.reason == reason
    assert str(caught.value).startswith("sidecar x.json ") and says in str(caught.value)


@pytest.mark.parametrize(
    ("content_range", "length", "offset", "fits"),
    [
        pytest.param("bytes 100-999/1000", 900, 100, True, id="exact"),
        pytest.param("bytes 100-999/1000", None, 100, True, id="no-length"),
        pytest.param("bytes 0-999/1000", 1000, 100, False, id="wrong-start"),
        pytest.param("bytes 100-499/1000", 400, 100, False, id="stops-early"),
        pytest.param("bytes 100-999/2000", 900, 100, False, id="wrong-total"),
        pytest.param("bytes 100-999/1000", 800, 100, False, id="length-disagrees"),
        pytest.param("bytes 100-999/*", 900, 100, False, id="unknown-total"),
        pytest.param("bytes */1000", None, 100, False, id="unsatisfied-form"),
        pytest.param("", 900, 100, False, id="missing"),
        pytest.param("items 100-999/1000", 900, 100, False, id="other-unit"),
        pytest.param("bytes 999-100/1000", None, 999, False, id="backwards"),
    ],
)
def test_a_206_fits_only_when_it_holds_the_rest_of_the_image(
    content_range: str, length: int | None, offset: int, fits: bool
) -> None:
    assert range_fits(content_range, length, offset) is fits


@pytest.mark.parametrize(
    ("headers", "validator"),
    [
        pytest.param({"ETag": '"abc"', "Last-Modified": "x"}, '"abc"', id="strong-etag"),
        pytest.param({"ETag": 'W/"abc"', "Last-Modified": "Sat, 05 Dec"}, "Sat, 05 Dec", id="weak"),
        pytest.param({"Last-Modified": "Sat, 05 Dec"}, "Sat, 05 Dec", id="date-only"),
        pytest.param({"ETag": "abc"}, None, id="unquoted"),
        pytest.param({"ETag": '"' + "a" * 300 + '"'}, None, id="too-long"),
        pytest.param({"ETag": '"a\tb"'}, None, id="control-char"),
        pytest.param({}, None, id="none"),
    ],
)
def test_the_resume_validator(headers: dict[str, str], validator: str | None) -> None:
    assert validator_of(headers) == validator


@pytest.mark.parametrize(
    ("image_id", "quoted"),
    [("a.b_c-1", "a.b_c-1"), ("../x", "..%2Fx"), ("a?b=1", "a%3Fb%3D1"), ("a#b", "a%23b")],
)
def test_an_id_is_one_quoted_path_segment(image_id: str, quoted: str) -> None:
    assert segment(image_id) == quoted
