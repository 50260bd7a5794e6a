"""Leader election on a ``coordination.k8s.io/v1`` Lease: the reads and writes around core.leases.

`LeaderElector.acquire` returns once this process holds the Lease, `hold` renews it until it
cannot (then raises `LeaseLost`: the caller stops reconciling at once), `release` hands it over
on a clean shutdown. The decisions (take over? renew? wait?) are `imagecache.core.leases`; this
module reads the Lease, writes what the core decided with the ``resourceVersion`` it read (a 409
means someone else wrote first: try again next period), and keeps the clocks: monotonic for
"how long has this record been unchanged", UTC wall time only for the MicroTimes it writes.

As client-go does, a record read is observed when the read *returns* (a slow API server delays a
standby's take-over, never hastens it), and the leader counts its renew deadline from when it
*sent* its last successful write. `write_budget` is what the write port consults before every
write (`kubeapi.WriteGate`): once the renew deadline has passed without a renewal it is <= 0 and
nothing more is written, before the Lease can expire for anyone else.

Errors: `LeaseLost` (an `imagecache.controller.errors.ControllerError`) is the only exception
`hold` raises; API errors and timeouts of a single attempt are logged and retried until the
renew deadline runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from imagecache.controller.errors import ControllerError
from imagecache.core.leases import (
    Decision,
    LeaseSpec,
    Observation,
    claimed,
    decide,
    leadership_left,
    lease_duration_seconds,
    observe,
    released,
)

logger = logging.getLogger("imagecache.controller.leader")

_TRANSIENT = (aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease, who we are, and the timings (seconds) of client-go's defaults."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    """How long a standby waits after the record last changed before it takes over; written as
    whole seconds (``leaseDurationSeconds``), rounded up."""
    renew_deadline: float = 10.0
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_period: float = 2.0
    """Time between two tries, to acquire or to renew."""

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("the lease identity must not be empty")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "lease timings need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


class LeaseLost(ControllerError):
    """This process held the Lease and no longer does (another holder, or no renewal in time)."""


def _spec_of(lease: k8s.V1Lease) -> LeaseSpec:
    spec = lease.spec or k8s.V1LeaseSpec()
    return LeaseSpec(
        holder=spec.holder_identity or "",
        duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
    )


class LeaderElector:
    """One candidate for one Lease. Not thread-safe; use it from one event loop."""

    def __init__(self, api: k8s.ApiClient, config: LeaseConfig) -> None:
        self._leases = k8s.CoordinationV1Api(api)
        self._config = config
        self._duration_seconds = lease_duration_seconds(config.lease_duration)
        self._observation: Observation | None = None
        self._renewed_at: float | None = None  # monotonic start of the last successful write

    @property
    def leading(self) -> bool:
        """True while this process holds the Lease and its last renewal is within the deadline."""
        return self.write_budget() > 0

    def write_budget(self) -> float:
        """Seconds this process may still write (<= 0: it is not leading, write nothing)."""
        return leadership_left(
            renewed_at=self._renewed_at,
            renew_deadline=self._config.renew_deadline,
            now=time.monotonic(),
        )

    async def acquire(self) -> None:
        """Try every `retry_period` until this process holds the Lease."""
        while True:
            if await self._attempt(renewing=False):
                break
            await asyncio.sleep(self._config.retry_period)
        assert self._observation is not None
        logger.info(
            "lease %s/%s acquired by %s (transitions: %d)",
            self._config.namespace,
            self._config.name,
            self._config.identity,
            self._observation.spec.transitions,
        )

    async def hold(self) -> None:
        """Renew every `retry_period`; raise `LeaseLost` once renewing failed for
        `renew_deadline`, or at once when another holder shows up."""
        config = self._config
        while True:
            await asyncio.sleep(config.retry_period)
            if self._renewed_at is None:
                raise LeaseLost(f"lease {config.namespace}/{config.name} is not held")
            remaining = self.write_budget()
            renewed = False
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        renewed = await self._attempt(renewing=True)
                except TimeoutError:
                    logger.warning("renewing lease %s timed out", config.name)
            if not renewed and not self.leading:
                self._renewed_at = None
                raise LeaseLost(
                    f"lease {config.namespace}/{config.name} not renewed within "
                    f"{config.renew_deadline}s"
                )

    async def release(self) -> None:
        """Hand the Lease over at once (no holder, one-second lease) if this process holds it.

        Failures are logged, not raised: a standby then takes over when the lease expires.
        """
        if self._renewed_at is None:
            return
        self._renewed_at = None
        config = self._config
        try:
            async with asyncio.timeout(config.renew_deadline):
                lease = await self._leases.read_namespaced_lease(config.name, config.namespace)
                current = _spec_of(lease)
                if current.holder != config.identity:
                    return
                spec = released(current, wall_now=datetime.now(UTC))
                await self._replace(spec, lease.metadata.resource_version)
        except (ApiException, *_TRANSIENT) as error:
            logger.warning("could not release lease %s: %r", config.name, error)
            return
        logger.info("lease %s/%s released by %s", config.namespace, config.name, config.identity)

    # -- one try -------------------------------------------------------------------------------

    async def _attempt(self, *, renewing: bool) -> bool:
        """Read, decide, write once; True when this process holds the Lease afterwards.

        Raises `LeaseLost` when `renewing` and the record names another holder.
        """
        config = self._config
        started = time.monotonic()  # the renew deadline counts from here (the write comes later)
        try:
            lease = await self._read()
            observed = time.monotonic()  # client-go: observed when the read returned
            if lease is None:
                self._observation = None
                resource_version = None
            else:
                spec = _spec_of(lease)
                if renewing and spec.holder != config.identity:
                    self._renewed_at = None
                    raise LeaseLost(
                        f"lease {config.namespace}/{config.name} is held by "
                        f"{spec.holder or 'nobody'} now"
                    )
                self._observation = observe(self._observation, spec, now=observed)
                resource_version = lease.metadata.resource_version
            decision = decide(self._observation, identity=config.identity, now=observed)
            if decision is Decision.WAIT:
                return False
            current = None if self._observation is None else self._observation.spec
            wanted = claimed(
                current,
                identity=config.identity,
                duration_seconds=self._duration_seconds,
                wall_now=datetime.now(UTC),
            )
            if decision is Decision.CREATE:
                written = await self._create(wanted)
            else:
                written = await self._replace(wanted, resource_version)
        except ApiException as error:
            if error.status == 409:
                logger.debug("lease %s: conflict, retrying next period", config.name)
            else:
                logger.warning("lease %s: %s %s", config.name, error.status, error.reason)
            return False
        except _TRANSIENT as error:
            logger.warning("lease %s: %r", config.name, error)
            return False
        self._observation = Observation(spec=_spec_of(written), since=started)
        self._renewed_at = started
        return True

    async def _read(self) -> k8s.V1Lease | None:
        try:
            lease: k8s.V1Lease = await self._leases.read_namespaced_lease(
                self._config.name, self._config.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return lease

    def _body(self, spec: LeaseSpec, resource_version: str | None) -> dict[str, Any]:
        """The Lease as a JSON dict, sent as is.

        Not a `V1Lease`: the client serialises datetimes with ``isoformat()``, which leaves out
        the fraction when it is zero, and the API server refuses a MicroTime without exactly six
        fraction digits.
        """
        metadata: dict[str, Any] = {"name": self._config.name, "namespace": self._config.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec.to_body(),
        }

    async def _create(self, spec: LeaseSpec) -> k8s.V1Lease:
        lease: k8s.V1Lease = await self._leases.create_namespaced_lease(
            self._config.namespace,
            self._body(spec, None),  # type: ignore[arg-type]  # a dict is sent as is (see _body)
        )
        return lease

    async def _replace(self, spec: LeaseSpec, resource_version: str | None) -> k8s.V1Lease:
        lease: k8s.V1Lease = await self._leases.replace_namespaced_lease(
            self._config.name,
            self._config.namespace,
            self._body(spec, resource_version),  # type: ignore[arg-type]  # sent as is
        )
        return lease
