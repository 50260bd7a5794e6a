"""Lease leader election, the decisions only: what to do with the Lease record we just read.

The convention is client-go's (``tools/leaderelection``) and controller-runtime's: a
``coordination.k8s.io/v1`` Lease whose ``spec`` holds ``holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and ``leaseTransitions``. Clocks of
different machines are never compared: a candidate notes *when it first saw* the current record
on its own monotonic clock (`observe`), and takes the lease over only once that record has not
changed for ``leaseDurationSeconds`` (`decide`). As in client-go, a record is observed at the
moment the read *returned* (a slow read then delays a take-over, never hastens it). The leader
counts its own time from the moment it *sent* the last successful write (`leadership_left`):
the record's new ``renewTime`` is later than that, and so is any standby's observation of it,
so a leader that stops writing once `renew_deadline` has passed since then (shorter than the
lease duration) stops before any standby can take over. `LeaseSpec.to_body` writes times as
the API server's MicroTime (RFC 3339, exactly six fraction digits; it refuses anything else).

Pure: no I/O, no clock — `now` (monotonic seconds) and `wall_now` (UTC) are passed in.
`imagecache.controller.leader` does the reads and writes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_micro_time(moment: datetime) -> str:
    """``2026-11-30T19:50:12.000000Z``: MicroTime as the API server reads and writes it."""
    return moment.astimezone(UTC).strftime(MICRO_TIME_FORMAT)


def lease_duration_seconds(duration: float) -> int:
    """The whole seconds a Lease can hold (``int32``): `duration` rounded up, at least 1."""
    return max(1, math.ceil(duration))


@dataclass(frozen=True)
class LeaseSpec:
    """The ``spec`` of a Lease; `holder` ``""`` means nobody holds it (released)."""

    holder: str
    duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    def to_body(self) -> dict[str, Any]:
        """The ``spec`` as JSON for a create or an update."""
        body: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            body["acquireTime"] = format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            body["renewTime"] = format_micro_time(self.renew_time)
        return body


@dataclass(frozen=True)
class Observation:
    """A record as a candidate saw it, and since when (its monotonic clock) it has been so."""

    spec: LeaseSpec
    since: float


def observe(previous: Observation | None, spec: LeaseSpec, *, now: float) -> Observation:
    """Keep the earlier observation while the record is unchanged; start anew when it changed.

    A holder that renews changes ``renewTime``, so its record keeps being seen anew; a holder
    that died leaves the record as it was, and `since` stops moving.
    """
    if previous is not None and previous.spec == spec:
        return previous
    return Observation(spec=spec, since=now)


class Decision(enum.Enum):
    """What a candidate does after reading the Lease."""

    CREATE = "create"
    """No Lease exists: create it holding it."""
    TAKE = "take"
    """Someone else's lease expired (or was released): write ourselves as holder."""
    RENEW = "renew"
    """We hold it: write a new ``renewTime``."""
    WAIT = "wait"
    """Another holder's lease is still valid: do nothing until the next try."""


def expires_at(observation: Observation) -> float:
    """When (on the observer's monotonic clock) the observed record's lease runs out."""
    return observation.since + observation.spec.duration_seconds


def leadership_left(*, renewed_at: float | None, renew_deadline: float, now: float) -> float:
    """Seconds this leader may still write (<= 0: it must not), `renewed_at` being when its last
    successful acquire or renew was sent (None: it does not hold the Lease)."""
    if renewed_at is None:
        return 0.0
    return renewed_at + renew_deadline - now


def decide(observation: Observation | None, *, identity: str, now: float) -> Decision:
    """The next step for candidate `identity` (client-go's ``tryAcquireOrRenew``)."""
    if observation is None:
        return Decision.CREATE
    holder = observation.spec.holder
    if holder == identity:
        return Decision.RENEW
    if holder and now < expires_at(observation):
        return Decision.WAIT
    return Decision.TAKE


def claimed(
    current: LeaseSpec | None, *, identity: str, duration_seconds: int, wall_now: datetime
) -> LeaseSpec:
    """The record to write when `identity` creates, takes or renews the Lease.

    Taking it from another holder (or from nobody) sets ``acquireTime`` and counts a transition;
    renewing keeps both and moves ``renewTime`` only.
    """
    if current is None:
        return LeaseSpec(identity, duration_seconds, wall_now, wall_now, 0)
    if current.holder == identity:
        return replace(current, duration_seconds=duration_seconds, renew_time=wall_now)
    return LeaseSpec(identity, duration_seconds, wall_now, wall_now, current.transitions + 1)


def released(current: LeaseSpec, *, wall_now: datetime) -> LeaseSpec:
    """The record a holder writes on clean shutdown (client-go's ``ReleaseOnCancel``): no holder,
    a one-second lease, so a standby takes over at its next try."""
    return LeaseSpec("", 1, wall_now, wall_now, current.transitions)
