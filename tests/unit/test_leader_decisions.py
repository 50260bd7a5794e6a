"""Lease leader election, the pure part (imagecache.core.leases).

Covers: when a candidate creates, takes over, renews or waits (client-go's rules: expiry counted
on the observer's clock from when the record last changed, a released lease taken at once);
which observation is kept; the record written on create, take-over, renew and release
(transitions, acquireTime); MicroTime formatting with exactly six fraction digits; whole-second
lease durations; the config's timing checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from imagecache.controller.leader import LeaseConfig
from imagecache.core.leases import (
    Decision,
    LeaseSpec,
    Observation,
    claimed,
    decide,
    format_micro_time,
    lease_duration_seconds,
    observe,
    released,
)

T0 = datetime(2026, 11, 30, 19, 0, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=7, microseconds=250)


def held_by(holder: str, *, duration: int = 15, renewed: datetime = T0) -> LeaseSpec:
    return LeaseSpec(holder, duration, T0, renewed, 3)


@pytest.mark.parametrize(
    ("observation", "now", "expected"),
    [
        pytest.param(None, 0.0, Decision.CREATE, id="no-lease-create"),
        pytest.param(Observation(held_by("me"), 100.0), 100.5, Decision.RENEW, id="mine-renew"),
        pytest.param(
            Observation(held_by("me"), 100.0), 999.0, Decision.RENEW, id="mine-even-if-stale"
        ),
        pytest.param(
            Observation(held_by("other"), 100.0), 100.0, Decision.WAIT, id="other-just-seen"
        ),
        pytest.param(
            Observation(held_by("other"), 100.0), 114.9, Decision.WAIT, id="other-before-expiry"
        ),
        pytest.param(
            Observation(held_by("other"), 100.0), 115.0, Decision.TAKE, id="other-expired"
        ),
        pytest.param(
            Observation(held_by("other", duration=1), 100.0), 101.0, Decision.TAKE, id="short"
        ),
        pytest.param(Observation(held_by(""), 100.0), 100.0, Decision.TAKE, id="released-at-once"),
    ],
)
def test_decide(observation: Observation | None, now: float, expected: Decision) -> None:
    assert decide(observation, identity="me", now=now) is expected


def test_expiry_counts_from_the_local_observation_not_the_holders_clock() -> None:
    """A renewTime far in the past (skewed clock) does not make a live lease look expired."""
    skewed = held_by("other", renewed=T0 - timedelta(days=1))
    seen = observe(None, skewed, now=500.0)
    assert decide(seen, identity="me", now=505.0) is Decision.WAIT


@pytest.mark.parametrize(
    ("previous", "spec", "since"),
    [
        pytest.param(None, held_by("a"), 10.0, id="first-sight"),
        pytest.param(Observation(held_by("a"), 1.0), held_by("a"), 1.0, id="unchanged-keeps"),
        pytest.param(
            Observation(held_by("a"), 1.0), held_by("a", renewed=LATER), 10.0, id="renewed-resets"
        ),
        pytest.param(Observation(held_by("a"), 1.0), held_by("b"), 10.0, id="new-holder-resets"),
    ],
)
def test_observe(previous: Observation | None, spec: LeaseSpec, since: float) -> None:
    assert observe(previous, spec, now=10.0) == Observation(spec, since)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        pytest.param(None, LeaseSpec("me", 2, LATER, LATER, 0), id="create"),
        pytest.param(held_by("me"), LeaseSpec("me", 2, T0, LATER, 3), id="renew-keeps-acquire"),
        pytest.param(held_by("other"), LeaseSpec("me", 2, LATER, LATER, 4), id="take-counts"),
        pytest.param(held_by(""), LeaseSpec("me", 2, LATER, LATER, 4), id="take-released"),
    ],
)
def test_claimed(current: LeaseSpec | None, expected: LeaseSpec) -> None:
    assert claimed(current, identity="me", duration_seconds=2, wall_now=LATER) == expected


def test_released_hands_over_with_a_one_second_lease() -> None:
    assert released(held_by("me"), wall_now=LATER) == LeaseSpec("", 1, LATER, LATER, 3)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(T0, "2026-11-30T19:00:00.000000Z", id="zero-fraction-still-six-digits"),
        pytest.param(LATER, "2026-11-30T19:00:07.000250Z", id="micro"),
        pytest.param(
            datetime(2026, 11, 30, 23, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-30T21:00:00.000005Z",
            id="other-offset-to-utc",
        ),
    ],
)
def test_format_micro_time(moment: datetime, text: str) -> None:
    assert format_micro_time(moment) == text


def test_to_body() -> None:
    assert LeaseSpec("me", 2, T0, LATER, 1).to_body() == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 2,
        "leaseTransitions": 1,
        "acquireTime": "2026-11-30T19:00:00.000000Z",
        "renewTime": "2026-11-30T19:00:07.000250Z",
    }


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        pytest.param(15.0, 15, id="whole"),
        pytest.param(1.5, 2, id="up"),
        pytest.param(0.1, 1, id="min"),
    ],
)
def test_lease_duration_seconds(duration: float, seconds: int) -> None:
    assert lease_duration_seconds(duration) == seconds


@pytest.mark.parametrize(
    ("timings", "ok"),
    [
        pytest.param({}, True, id="client-go-defaults"),
        pytest.param(
            {"lease_duration": 2, "renew_deadline": 1, "retry_period": 0.2}, True, id="fast"
        ),
        pytest.param({"renew_deadline": 15.0}, False, id="renew-not-below-lease"),
        pytest.param({"retry_period": 10.0}, False, id="retry-not-below-renew"),
        pytest.param({"retry_period": 0.0}, False, id="zero-retry"),
    ],
)
def test_lease_config_timings(timings: dict[str, float], ok: bool) -> None:
    def build() -> LeaseConfig:
        return LeaseConfig(name="l", namespace="ns", identity="me", **timings)

    if ok:
        build()
    else:
        with pytest.raises(ValueError, match="lease timings"):
            build()


@pytest.mark.parametrize(
    ("renewed_at", "now", "left"),
    [
        pytest.param(None, 0.0, 0.0, id="not-held"),
        pytest.param(100.0, 100.0, 10.0, id="just-renewed"),
        pytest.param(100.0, 107.5, 2.5, id="within-deadline"),
        pytest.param(100.0, 110.0, 0.0, id="at-deadline"),
        pytest.param(100.0, 113.0, -3.0, id="past-deadline"),
    ],
)
def test_leadership_left_counts_from_the_last_renewal_sent(
    renewed_at: float | None, now: float, left: float
) -> None:
    from imagecache.core.leases import leadership_left

    assert leadership_left(renewed_at=renewed_at, renew_deadline=10.0, now=now) == left
