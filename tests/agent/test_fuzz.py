"""Schema-driven fuzzing of a real agent against its OpenAPI document (schemathesis).

Covers (SPEC §2.7, §6 "Bad input"):
- the document served at `/openapi.json` is the one in the repository
  (`operator/imagecache/agent/openapi.json`) and is a valid OpenAPI 3 document;
- for every operation in it, generated valid requests (positive mode) and generated invalid
  requests (negative mode), sent with a valid token to a real agent process over loopback:
  never a 5xx, and every response conforms to the document (status code declared, content
  type, headers and body schema) — schemathesis' default checks;
- the agent is still alive and healthy after the whole run.

The example count per operation and mode is bounded (`EXAMPLES`) so the module stays well under
a minute on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.support.agents import AgentProcess
from tests.support.upstreams import write_file_image

OPENAPI = Path(__file__).resolve().parents[2] / "operator" / "imagecache" / "agent" / "openapi.json"
TOKEN = "fuzz-token"
EXAMPLES = 80
IMAGES = {"fuzz-image": b"fuzz bytes\n" * 500, "0a1b2c3d-0000-4000-8000-000000000001": b"u" * 4096}


def _labels() -> list[str]:
    """`METHOD /path` of every operation in the document (read at collection time)."""
    if not OPENAPI.exists():
        return ["<no openapi.json>"]
    doc = json.loads(OPENAPI.read_text())
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return [
        f"{method.upper()} {path}"
        for path, item in doc.get("paths", {}).items()
        for method in item
        if method in methods
    ]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    base = tmp_path_factory.mktemp("fuzz")
    source = base / "images"
    for image_id, data in IMAGES.items():
        write_file_image(source, image_id, data)
    token_file = base / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    process = AgentProcess(
        cache_dir=base / "cache",
        upstream=f"file://{source}",
        token_file=token_file,
        extra_args=["--retries", "1"],
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def schema() -> Any:
    assert OPENAPI.exists(), f"the agent's OpenAPI document is missing: {OPENAPI}"
    return schemathesis.openapi.from_path(str(OPENAPI))


def test_served_document_is_the_repository_document(agent: AgentProcess) -> None:
    assert OPENAPI.exists(), f"the agent's OpenAPI document is missing: {OPENAPI}"
    served = requests.get(f"{agent.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"].split(";")[0] == "application/json"
    assert served.json() == json.loads(OPENAPI.read_text())
    assert served.json()["openapi"].startswith("3.")


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(GenerationMode.POSITIVE, id="positive"),
        pytest.param(GenerationMode.NEGATIVE, id="negative"),
    ],
)
@pytest.mark.parametrize("label", _labels())
def test_operation_conforms_and_never_5xx(
    agent: AgentProcess, schema: Any, label: str, mode: GenerationMode
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} not found in {OPENAPI}"
    # Negative mode is meaningless for an operation with nothing to negate (no parameters).
    if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
        pytest.skip(f"{label} takes no input to make invalid")
    strategy = operation.as_strategy(generation_mode=mode)
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        headers = {"X-Auth-Token": TOKEN}
        if mode is GenerationMode.POSITIVE and case.headers:
            # Whether a peer hint is accepted depends on peer_networks (400 outside it), not on
            # the document: tests/agent/test_peer_fill.py covers it.
            case.headers.pop("X-Image-Cache-Source", None)
        if case.headers and any(
            k.lower() in {"x-auth-token", "authorization"} for k in case.headers
        ):
            headers = {}
        case.call_and_validate(base_url=agent.url, session=session, headers=headers, timeout=10)

    try:
        check()
    finally:
        session.close()
    assert requests.get(f"{agent.url}/healthz", timeout=5).status_code == 200


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters()) or len(operation.body))


def test_agent_is_healthy_after_fuzzing(agent: AgentProcess) -> None:
    assert agent.process is not None and agent.process.poll() is None, agent.logs()[-2000:]
    assert requests.get(f"{agent.url}/readyz", timeout=5).status_code == 200
