"""Validation of ImageCacheRequests against the CRD's schema and CEL rules, driven with the
official ``kubernetes`` client.

Covers: refusals (422 Invalid) worded like the real API server's for required, type, pattern,
enum, min/max, maxLength, the CEL "exactly one of" rule and the CEL immutability rules (only on
update); a pod selector that selects nothing in particular (empty, or with empty parts) refused by
CEL, its lists bounded by maxItems, and each expression's values checked against its operator;
defaults applied; unknown fields pruned (but kept under a preserve-unknown status).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.kube.official import create_icr, get_icr, patch_icr, status_of

PREFIX = 'ImageCacheRequest.imagecache.dev "x" is invalid: '

FANOUT_DEFAULTS = {"enabled": True, "seeds": 1, "width": 4}  # the CRD defaults `fanout: {}`


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "imagecache.dev/v1alpha1",
        "kind": "ImageCacheRequest",
        "metadata": {"name": "x"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"pod": "p"}, "spec.image: Required value", id="required"),
        pytest.param(
            {"image": "img", "pod": "p", "podSelector": {"matchLabels": {"a": "b"}}},
            'spec: Invalid value: "object": exactly one of spec.pod or spec.podSelector must be set',  # noqa: E501 (the API server's wording)
            id="cel-both",
        ),
        pytest.param(
            {"image": "img"},
            'spec: Invalid value: "object": exactly one of spec.pod or spec.podSelector must be set',  # noqa: E501 (the API server's wording)
            id="cel-neither",
        ),
        pytest.param(
            {"image": "bad id", "pod": "p"},
            "spec.image: Invalid value: \"bad id\": spec.image in body should match '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'",  # noqa: E501 (the API server's wording)
            id="pattern",
        ),
        pytest.param({"image": "a" * 129, "pod": "p"}, None, id="too-long"),
        pytest.param(
            {"image": "img", "pod": "p", "port": 0},
            "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1",
            id="minimum",
        ),
        pytest.param(
            {"image": "img", "pod": "p", "port": 70000},
            "spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535",  # noqa: E501 (the API server's wording)
            id="maximum",
        ),
        pytest.param(
            {"image": "img", "pod": "p", "port": "80"},
            'spec.port: Invalid value: "string": spec.port in body must be of type integer: "string"',  # noqa: E501 (the API server's wording)
            id="type",
        ),
        pytest.param(
            {"image": "img", "pod": "p", "fanout": {"seeds": 0}},
            None,
            id="fanout-no-seed",
        ),
        pytest.param(
            {"image": "img", "pod": "p", "fanout": {"width": 65}},
            None,
            id="fanout-too-wide",
        ),
        pytest.param(
            {"image": "img", "pod": "p", "fanout": {"enabled": "yes"}},
            None,
            id="fanout-enabled-type",
        ),
        pytest.param(
            {
                "image": "img",
                "podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
            },
            'spec.podSelector.matchExpressions[0].operator: Unsupported value: "Near": '
            'supported values: "In", "NotIn", "Exists", "DoesNotExist"',
            id="enum",
        ),
    ],
)
def test_invalid_objects_are_refused(
    k8s: ApiClient, spec: dict[str, Any], message: str | None
) -> None:
    with pytest.raises(ApiException) as err:
        create_icr(k8s, body(spec))
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"
    assert status_of(err.value)["message"].startswith(PREFIX)
    if message is not None:
        assert status_of(err.value)["message"] == PREFIX + message
    assert status_of(err.value)["details"]["kind"] == "ImageCacheRequest"
    assert get_icr(k8s, "x") is None


EMPTY_SELECTOR = (
    'spec.podSelector: Invalid value: "object": spec.podSelector must set matchLabels or '
    "matchExpressions: an empty selector would target every pod in the namespace"
)
VALUES_FOR_OPERATOR = (
    'Invalid value: "object": values must be non-empty for In and NotIn, and empty for Exists '
    "and DoesNotExist"
)


def expression(key: str, operator: str, values: list[str] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"key": key, "operator": operator}
    if values is not None:
        found["values"] = values
    return found


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param({}, EMPTY_SELECTOR, id="empty"),
        pytest.param({"matchLabels": {}}, EMPTY_SELECTOR, id="empty-match-labels"),
        pytest.param({"matchExpressions": []}, EMPTY_SELECTOR, id="empty-match-expressions"),
        pytest.param(
            {"matchLabels": {}, "matchExpressions": []}, EMPTY_SELECTOR, id="both-parts-empty"
        ),
        pytest.param(
            {"matchExpressions": [expression(f"k{i}", "Exists") for i in range(17)]},
            "spec.podSelector.matchExpressions: Too many: 17: must have at most 16 items",
            id="too-many-expressions",
        ),
        pytest.param(
            {"matchExpressions": [expression("app", "In", [f"v{i}" for i in range(65)])]},
            "spec.podSelector.matchExpressions[0].values: Too many: 65: must have at most 64 items",
            id="too-many-values",
        ),
        pytest.param(
            {"matchLabels": {"app": "x" * 64}},
            "spec.podSelector.matchLabels.app: Too long: may not be more than 63 bytes",
            id="label-value-too-long",
        ),
        pytest.param(
            {"matchExpressions": [expression("app", "In")]},
            "spec.podSelector.matchExpressions[0]: " + VALUES_FOR_OPERATOR,
            id="in-without-values",
        ),
        pytest.param(
            {"matchExpressions": [expression("app", "NotIn", [])]},
            "spec.podSelector.matchExpressions[0]: " + VALUES_FOR_OPERATOR,
            id="not-in-with-empty-values",
        ),
        pytest.param(
            {"matchExpressions": [expression("app", "Exists", ["x"])]},
            "spec.podSelector.matchExpressions[0]: " + VALUES_FOR_OPERATOR,
            id="exists-with-values",
        ),
    ],
)
def test_selectors_that_select_everything_or_too_much_are_refused(
    k8s: ApiClient, selector: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as err:
        create_icr(k8s, body({"image": "img", "podSelector": selector}))
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"
    assert status_of(err.value)["message"] == PREFIX + message
    assert get_icr(k8s, "x") is None


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param({"matchLabels": {"app": "glance-api"}}, id="labels"),
        pytest.param({"matchExpressions": [expression("app", "Exists")]}, id="exists"),
        pytest.param(
            {
                "matchLabels": {f"l{i}": "v" for i in range(32)},
                "matchExpressions": [
                    expression(f"k{i}", "In", [f"v{j}" for j in range(64)]) for i in range(16)
                ],
            },
            id="at-every-bound",
        ),
        pytest.param(
            {"matchLabels": {}, "matchExpressions": [expression("tier", "DoesNotExist", [])]},
            id="one-part-empty",
        ),
    ],
)
def test_selectors_within_the_bounds_are_accepted(k8s: ApiClient, selector: dict[str, Any]) -> None:
    created = create_icr(k8s, body({"image": "img", "podSelector": selector}))
    assert created["spec"]["podSelector"] == selector


def test_several_errors_are_listed(k8s: ApiClient) -> None:
    with pytest.raises(ApiException) as err:
        create_icr(k8s, body({"image": "bad id", "port": 0, "pod": "p"}))
    assert status_of(err.value)["message"].startswith(PREFIX + "[")
    assert len(status_of(err.value)["details"]["causes"]) == 2


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param(
            {"spec": {"image": "other"}},
            'spec.image: Invalid value: "string": spec.image is immutable',
            id="image",
        ),
        pytest.param(
            {"spec": {"pod": "q"}},
            'spec.pod: Invalid value: "string": spec.pod is immutable',
            id="pod",
        ),
        pytest.param(
            {"spec": {"pod": None, "podSelector": {"matchLabels": {"a": "b"}}}},
            'spec: Invalid value: "object": spec.pod and spec.podSelector cannot be swapped; create a new request',  # noqa: E501 (the API server's wording)
            id="swap",
        ),
    ],
)
def test_immutable_fields_on_update(k8s: ApiClient, patch: dict[str, Any], message: str) -> None:
    create_icr(k8s, body({"image": "img", "pod": "p"}))
    with pytest.raises(ApiException) as err:
        patch_icr(k8s, "x", patch)
    assert err.value.status == 422
    assert message in status_of(err.value)["message"]
    ok = patch_icr(k8s, "x", {"spec": {"port": 8080}})
    assert ok["spec"]["port"] == 8080


def test_defaults_and_pruning(k8s: ApiClient) -> None:
    created = create_icr(k8s, body({"image": "img", "pod": "p", "bogus": 1}))
    assert created["spec"] == {
        "image": "img",
        "pod": "p",
        "evictOnDelete": False,
        "fanout": FANOUT_DEFAULTS,
    }
    status = {"phase": "Cached", "extra": {"kept": True}, "progress": {"percent": 100, "junk": 1}}
    obj = patch_icr(k8s, "x", {"status": status}, status=True)
    assert obj["status"]["extra"] == {"kept": True}  # x-kubernetes-preserve-unknown-fields
    assert obj["status"]["progress"] == {"percent": 100}  # not inherited by nested schemas


def test_status_is_validated_too(k8s: ApiClient) -> None:
    create_icr(k8s, body({"image": "img", "pod": "p"}))
    with pytest.raises(ApiException) as err:
        patch_icr(k8s, "x", {"status": {"phase": "Done"}}, status=True)
    assert 'status.phase: Unsupported value: "Done"' in status_of(err.value)["message"]
