"""`LeaderElector` (imagecache.controller.leader) against the strict emulator's Leases.

Covers: of two candidates exactly one leads, and only it writes the Lease while it holds it;
a leader that stops renewing is replaced no sooner than ``leaseDurationSeconds`` after its last
write, with one more ``leaseTransitions``; a 409 on renew is survived, a renew that keeps
failing ends in `LeaseLost` within the renew deadline, another holder written into the Lease
ends it at once; `release` hands the Lease to a waiting candidate long before it would expire.
Each candidate talks through its own kubernetes_asyncio client with its own token, so the
emulator's write log tells them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes.client import CoordinationV1Api
from kubernetes_asyncio import config as k8s_config

from imagecache.controller.leader import LeaderElector, LeaseConfig, LeaseLost
from tests.kube.emulator import Emulator

NAME, NS = "imagecache-operator", "default"
FAST = {"lease_duration": 2.0, "renew_deadline": 1.0, "retry_period": 0.2}
DEADLINE = 20.0


@contextlib.asynccontextmanager
async def candidate(
    kube: Emulator, identity: str, **timings: float
) -> AsyncIterator[LeaderElector]:
    """An elector for `identity`, on a client of its own whose token is `identity`."""
    api = await k8s_config.new_client_from_config(config_file=str(kube.kubeconfig_for(identity)))
    config = LeaseConfig(name=NAME, namespace=NS, identity=identity, **{**FAST, **timings})
    try:
        yield LeaderElector(api, config)
    finally:
        await api.close()


async def wait_until(check: Callable[[], Any], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def lease_writes(kube: Emulator, token: str | None = None) -> list[Any]:
    return [
        w
        for w in kube.writes
        if w.resource == "leases" and w.code < 300 and (token is None or w.token == token)
    ]


def holder(kube: Emulator) -> dict[str, Any]:
    with kube.official_client() as api:
        spec = CoordinationV1Api(api).read_namespaced_lease(NAME, NS).spec
    return {"holder": spec.holder_identity, "transitions": spec.lease_transitions}


async def stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_of_two_candidates_exactly_one_leads(kube: Emulator) -> None:
    async with candidate(kube, "a") as a, candidate(kube, "b") as b:
        acquiring = {"a": asyncio.create_task(a.acquire()), "b": asyncio.create_task(b.acquire())}
        done, _ = await asyncio.wait(acquiring.values(), return_when=asyncio.FIRST_COMPLETED)
        winner = next(k for k, t in acquiring.items() if t in done)
        loser = "b" if winner == "a" else "a"
        leader, standby = (a, b) if winner == "a" else (b, a)
        holding = asyncio.create_task(leader.hold())
        try:
            renewals = len(lease_writes(kube, winner))
            await wait_until(
                lambda: len(lease_writes(kube, winner)) >= renewals + 5, "five renewals"
            )
            assert leader.leading and not standby.leading
            assert not acquiring[loser].done()
            assert holder(kube) == {"holder": winner, "transitions": 0}
            assert lease_writes(kube, loser) == []
        finally:
            await stop(holding, acquiring[loser])


async def test_a_leader_that_stops_renewing_is_replaced_after_the_lease_duration(
    kube: Emulator,
) -> None:
    async with candidate(kube, "a") as a, candidate(kube, "b") as b:
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        taking_over = asyncio.create_task(b.acquire())
        await wait_until(lambda: len(lease_writes(kube, "a")) >= 3, "a renews")
        await stop(holding)  # a "dies": no more renewals, no release
        await asyncio.wait_for(taking_over, DEADLINE)
        assert b.leading
        last_by_a = lease_writes(kube, "a")[-1].at
        taken = lease_writes(kube, "b")[0].at
        assert taken - last_by_a >= FAST["lease_duration"]
        assert holder(kube) == {"holder": "b", "transitions": 1}


async def test_a_conflict_on_renew_is_survived(kube: Emulator) -> None:
    async with candidate(kube, "a") as a:
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        try:
            fault = kube.fail_writes(409, verb="update", resource="leases", times=2)
            await wait_until(lambda: fault.hits == 2, "two conflicts")
            renewed = len(lease_writes(kube, "a"))
            await wait_until(lambda: len(lease_writes(kube, "a")) >= renewed + 3, "renewals")
            assert a.leading and not holding.done()
        finally:
            await stop(holding)


async def test_renewals_failing_past_the_deadline_lose_the_lease(kube: Emulator) -> None:
    async with candidate(kube, "a") as a:
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        kube.fail_writes(503, verb="update", resource="leases")
        started = time.monotonic()
        with pytest.raises(LeaseLost, match="not renewed within"):
            await asyncio.wait_for(holding, DEADLINE)
        assert not a.leading
        assert time.monotonic() - started < FAST["lease_duration"] + FAST["retry_period"]


async def test_another_holder_in_the_lease_ends_holding_at_once(kube: Emulator) -> None:
    async with candidate(kube, "a") as a:
        await a.acquire()
        holding = asyncio.create_task(a.hold())
        with kube.official_client("intruder") as api:
            CoordinationV1Api(api).patch_namespaced_lease(
                NAME, NS, {"spec": {"holderIdentity": "intruder"}}
            )
        with pytest.raises(LeaseLost, match="held by intruder"):
            await asyncio.wait_for(holding, DEADLINE)
        assert not a.leading


async def test_release_hands_over_long_before_expiry(kube: Emulator) -> None:
    slow = {"lease_duration": 10.0, "renew_deadline": 5.0, "retry_period": 0.2}
    async with candidate(kube, "a", **slow) as a, candidate(kube, "b", **slow) as b:
        await a.acquire()
        taking_over = asyncio.create_task(b.acquire())
        await wait_until(lambda: len(b_reads(kube)) >= 2, "b has looked at the lease")
        released_at = time.monotonic()
        await a.release()
        assert not a.leading
        await asyncio.wait_for(taking_over, DEADLINE)
        assert time.monotonic() - released_at < slow["lease_duration"] / 2
        assert holder(kube) == {"holder": "b", "transitions": 1}
        await a.release()  # not the holder any more: writes nothing
        assert lease_writes(kube, "a")[-1].body["spec"]["holderIdentity"] == ""


def b_reads(kube: Emulator) -> list[Any]:
    return [
        r
        for r in kube.requests
        if r.method == "GET"
        and r.name == NAME
        and r.headers.get("Authorization", "").endswith(" b")
    ]
