"""Fault injection through kmock's DSL on top of the strict emulator.

Covers: a reaction added by a test answers first (here: one 503 on a status patch), then the
emulator serves as usual; every request is recorded in `Emulator.requests`.
"""

from __future__ import annotations

import kmock
import pytest

from tests.kube.client import ICR, ApiError
from tests.kube.emulator import Emulator


async def test_one_injected_failure_then_normal_service(kube: Emulator) -> None:
    await kube.client.create(
        ICR, {"metadata": {"name": "a"}, "spec": {"image": "i", "pod": "p"}}, namespace="default"
    )
    kube.mock[kmock.method.PATCH, kmock.subresource("status")][:1] << 503
    with pytest.raises(ApiError) as err:
        await kube.client.patch(
            ICR, "a", {"status": {"phase": "Queued"}}, namespace="default", subresource="status"
        )
    assert err.value.status == 503
    obj = await kube.client.patch(
        ICR, "a", {"status": {"phase": "Queued"}}, namespace="default", subresource="status"
    )
    assert obj["status"]["phase"] == "Queued"
    patches = [r for r in kube.requests if r.method == kmock.method.PATCH]
    assert len(patches) == 2 and all(r.subresource == "status" for r in patches)
