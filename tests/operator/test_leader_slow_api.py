"""Leader election against an API server that answers Lease calls after 3 s (issue 14, item 8).

Covers: a leader whose renewals cannot complete within the renew deadline (each Lease read and
write held 3 s by the emulator) stops writing at its renew deadline -- the write port's gate
refuses further status writes without sending them -- and gives up leading (`LeaseLost`); the
standby takes over only a full lease duration after it last saw the record change (its
observation is taken when its slow read *returns*); every status write of the old leader was
answered before the new leader's first Lease write, and before the old leader's Lease could
expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import config as k8s_config

from imagecache.controller.kubeapi import ApiWrites, WriteFailed
from imagecache.controller.leader import LeaderElector, LeaseConfig, LeaseLost
from tests.kube.emulator import Emulator
from tests.operator.harness import ICR, image_id, request_body

NAME, NS = "imagecache-operator", "default"
TIMINGS = {"lease_duration": 5.0, "renew_deadline": 4.0, "retry_period": 0.5}
SLOW = 3.0


@contextlib.asynccontextmanager
async def candidate(kube: Emulator, identity: str) -> AsyncIterator[tuple[LeaderElector, Any]]:
    api = await k8s_config.new_client_from_config(config_file=str(kube.kubeconfig_for(identity)))
    try:
        yield (
            LeaderElector(api, LeaseConfig(name=NAME, namespace=NS, identity=identity, **TIMINGS)),
            api,
        )
    finally:
        await api.close()


def _writes(kube: Emulator, token: str, resource: str) -> list[Any]:
    return [w for w in kube.writes if w.token == token and w.resource == resource and w.code < 300]


@pytest.mark.timeout(90)
async def test_a_leader_behind_a_slow_api_stops_writing_before_its_lease_can_expire(
    kube: Emulator,
) -> None:
    await kube.client.create(ICR, request_body("r", image_id(160), pod="glance-0"))
    async with candidate(kube, "a") as (a, api_a), candidate(kube, "b") as (b, _):
        await asyncio.wait_for(a.acquire(), 10)
        writes = ApiWrites(api_a, timeout=30.0, gate=a)
        await writes.patch_status(NS, "r", {"phase": "Pending", "reason": "PodNotFound"})
        kube.delay(SLOW, resource="leases")
        holding = asyncio.create_task(a.hold())
        acquiring = asyncio.create_task(b.acquire())
        refused_at = None
        try:
            deadline = time.monotonic() + 30
            while refused_at is None and time.monotonic() < deadline:
                try:
                    await writes.patch_status(NS, "r", {"message": f"{time.monotonic()}"})
                except WriteFailed as error:  # cut at the deadline (timeout), then refused
                    if "not leading" in str(error):
                        refused_at = time.monotonic()
                await asyncio.sleep(0.1)
            assert refused_at is not None, "the gate never closed"
            with pytest.raises(LeaseLost):
                await asyncio.wait_for(holding, 15)
            await asyncio.wait_for(acquiring, 60)
        finally:
            for task in (holding, acquiring):
                task.cancel()
            await asyncio.gather(holding, acquiring, return_exceptions=True)
    a_status = _writes(kube, "a", "imagecacherequests")
    a_leases = _writes(kube, "a", "leases")
    taken = _writes(kube, "b", "leases")[0]
    assert a_status and all(w.at < refused_at for w in a_status), "nothing sent after the gate"
    assert a_status[-1].at < taken.at, "the old leader's writes all came before the new one's"
    assert taken.at >= a_leases[-1].at + TIMINGS["lease_duration"] - 0.05, (
        "the standby waited a full lease duration after the record last changed"
    )
    assert a_status[-1].at < a_leases[-1].at + TIMINGS["lease_duration"]
