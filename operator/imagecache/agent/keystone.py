"""Keystone both ways, with the ecosystem's own libraries (SPEC §2.8).

`Keystone` wraps one keystoneauth1 session built by openstacksdk's clouds.yaml loader for the
``os_cloud`` setting (file from ``OS_CLIENT_CONFIG_FILE`` or the usual places; password and
application credentials alike). It gives:

- the agent's *own* token for a Glance upstream (`auth_headers`): keystoneauth re-authenticates
  by itself when the token has under two minutes left, and `invalidate` forces a new one after
  the upstream answered 401;
- the image endpoint from the service catalog (`image_endpoint`, for ``upstream = glance://``),
  with the interface and region of the cloud entry;
- the validation of a *client's* token (`check`): ``GET /v3/auth/tokens`` with
  ``X-Subject-Token`` through the session, a positive verdict kept in a `VerdictCache` until
  the token expires (at most five minutes), a negative one (unknown, expired, malformed) for
  `NEGATIVE_VERDICT_AGE` seconds in a cache of its own, so bogus tokens never push out good
  verdicts.

Limits (issue 16, item 7): every call is bounded by ``keystone_timeout`` (the session's
timeout for each HTTP request, and the same bound around the whole call, so a Keystone that
accepts and never answers costs a caller that long at most); keystoneauth blocks, so calls run
on threads — two pools, one for validating client tokens and one for the agent's own
authentication and catalog, so hung validations never starve downloads; a token longer than
`MAX_TOKEN_LENGTH` or with characters no Keystone token has is invalid without asking
(`plausible_token`); Keystone refusing a token as malformed (400) is an invalid token, not an
outage. Errors::

    KeystoneError             the cloud cannot be loaded, or Keystone cannot be asked (in time)
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from keystoneauth1 import access
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1.session import Session
from openstack import exceptions as sdk_exceptions
from openstack.config import loader
from openstack.config.cloud_region import CloudRegion

log = logging.getLogger("imagecache.agent.keystone")

T = TypeVar("T")

MAX_VERDICT_AGE = 300.0  # seconds a validation is trusted, at most
MAX_VERDICTS = 4096  # validations kept; the oldest go first
NEGATIVE_VERDICT_AGE = 30.0  # seconds a refusal (unknown, expired, malformed token) is kept
MAX_NEGATIVE_VERDICTS = 4096  # refusals kept (their own cache: they never evict acceptances)
VALIDATION_THREADS = 4  # client-token validations in flight at once
OWN_THREADS = 2  # the agent's own authentication and catalog calls in flight at once
MAX_PENDING_CHECKS = 1024  # distinct client tokens being validated at once, all clients
MAX_TOKEN_LENGTH = 2048  # characters; Fernet tokens are ~200, JWS ~800 (Keystone: 400 beyond
# its max_token_size, 255 by default)

Outcome = Literal["allowed", "invalid", "forbidden"]
Pool = Literal["validation", "own"]


class KeystoneError(Exception):
    """The cloud cannot be loaded, or Keystone could not be asked (the agent's fault)."""


@dataclass(frozen=True)
class Verdict:
    """What Keystone said about one client token, and until when that holds."""

    outcome: Outcome
    until: float  # epoch seconds


def judge(
    *, expires_at: float, roles: frozenset[str], required: frozenset[str], now: float
) -> Verdict:
    """The verdict on a token Keystone found valid: pure, for the cache and the tests.

    Allowed with one of `required`, else forbidden; trusted until the token expires, at most
    `MAX_VERDICT_AGE` from `now`. A token already expired is invalid.
    """
    if expires_at <= now:
        return Verdict("invalid", now)
    outcome: Outcome = "allowed" if roles & required else "forbidden"
    return Verdict(outcome, min(expires_at, now + MAX_VERDICT_AGE))


class VerdictCache:
    """Verdicts by token digest (never the token itself), bounded, oldest evicted first."""

    def __init__(self, max_entries: int = MAX_VERDICTS) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Verdict] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, token: str, *, now: float) -> Verdict | None:
        key = self.key(token)
        verdict = self._entries.get(key)
        if verdict is None:
            return None
        if verdict.until <= now:
            del self._entries[key]
            return None
        return verdict

    def put(self, token: str, verdict: Verdict) -> None:
        key = self.key(token)
        self._entries[key] = verdict
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class PendingChecks:
    """Checks of client tokens in flight: concurrent checks of one token share one call, and at
    most `limit` distinct tokens are checked at once (`overflow()` is raised beyond that).

    Shared by Keystone validations and Kubernetes TokenReviews; keyed by token digest.
    """

    def __init__(self, limit: int, overflow: Callable[[], Exception]) -> None:
        self.limit = limit
        self.overflow = overflow
        self._pending: dict[str, asyncio.Future[Verdict]] = {}

    async def run(self, token: str, call: Callable[[], Awaitable[Verdict]]) -> Verdict:
        key = VerdictCache.key(token)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.limit:  # a flood of unknown tokens
                raise self.overflow()
            pending = asyncio.ensure_future(call())
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)


def plausible_token(token: str) -> bool:
    """Whether `token` could be a Keystone token: printable ASCII, no spaces, at most
    `MAX_TOKEN_LENGTH` characters. Anything else is refused without asking Keystone."""
    return (
        0 < len(token) <= MAX_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and (" " not in token)
    )


def load_cloud(name: str) -> CloudRegion:
    """The clouds.yaml entry `name` (``OS_CLIENT_CONFIG_FILE`` or the usual places)."""
    try:
        return loader.OpenStackConfig().get_one(cloud=name)
    except (sdk_exceptions.SDKException, ks_exceptions.ClientException, OSError) as error:
        raise KeystoneError(f"cannot load cloud {name!r} from clouds.yaml: {error}") from error


def strip_version(endpoint: str) -> str:
    """A catalog's image endpoint without a trailing ``/v2`` (the upstream adds ``/v2/...``)."""
    base = endpoint.rstrip("/")
    for suffix in ("/v2.0", "/v2"):
        if base.endswith(suffix):
            return base.removesuffix(suffix)
    return base


class Keystone:
    """One cloud's keystoneauth session: the agent's tokens, its catalog, client validation."""

    def __init__(
        self,
        cloud: CloudRegion,
        *,
        required_roles: frozenset[str],
        clock: Callable[[], float],
        timeout: float = 10.0,
    ) -> None:
        self.cloud = cloud
        self.required_roles = required_roles
        self.clock = clock
        self.timeout = timeout
        self.verdicts = VerdictCache()
        self.refusals = VerdictCache(MAX_NEGATIVE_VERDICTS)
        self._session: Session | None = None
        self._pools: dict[Pool, ThreadPoolExecutor] = {}
        self._checks = PendingChecks(
            MAX_PENDING_CHECKS, lambda: KeystoneError("too many token validations in flight")
        )

    @property
    def session(self) -> Session:
        if self._session is None:
            session = self.cloud.get_session()
            session.timeout = self.timeout  # each HTTP request, the agent's own auth included
            self._session = session
        return self._session

    async def _run(self, call: Callable[[], T], *, pool: Pool) -> T:
        """`call` on `pool`'s threads, bounded by ``keystone_timeout`` (`KeystoneError`)."""
        executor = self._pools.get(pool)
        if executor is None:
            threads = VALIDATION_THREADS if pool == "validation" else OWN_THREADS
            executor = ThreadPoolExecutor(threads, thread_name_prefix=f"keystone-{pool}")
            self._pools[pool] = executor
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(executor, call)
        except TimeoutError as error:
            raise KeystoneError(f"Keystone did not answer within {self.timeout:g}s") from error
        except (ks_exceptions.ClientException, sdk_exceptions.SDKException) as error:
            raise KeystoneError(f"Keystone: {error}") from error

    async def close(self) -> None:
        for executor in self._pools.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._pools.clear()
        if self._session is not None:
            self._session.session.close()
            self._session = None

    # --- the agent's own identity ------------------------------------------------------------
    async def auth_headers(self) -> dict[str, str]:
        """``X-Auth-Token`` for the upstream; renewed by keystoneauth before it expires."""
        headers = await self._run(self.session.get_auth_headers, pool="own")
        if not headers:
            raise KeystoneError("Keystone gave no token")
        return {str(k): str(v) for k, v in headers.items()}

    async def invalidate(self) -> None:
        """Forget the agent's token (the upstream refused it): the next call re-authenticates."""
        await self._run(self.session.invalidate, pool="own")

    async def image_endpoint(self) -> str:
        """The image service's endpoint from the catalog (the cloud entry's interface/region)."""
        interface = self.cloud.get_interface("image")
        region = self.cloud.get_region_name("image")
        endpoint = await self._run(
            functools.partial(
                self.session.get_endpoint,
                service_type="image",
                interface=interface,
                region_name=region,
            ),
            pool="own",
        )
        if not endpoint:
            raise KeystoneError(
                f"no image endpoint in the catalog (interface {interface!r}, region {region!r})"
            )
        return strip_version(endpoint)

    # --- client tokens -----------------------------------------------------------------------
    def known(self, token: str) -> Outcome | None:
        """The cached verdict on `token`, if any: answered without a thread or a wait."""
        if not plausible_token(token):
            return "invalid"
        now = self.clock()
        for cache in (self.verdicts, self.refusals):
            verdict = cache.get(token, now=now)
            if verdict is not None:
                return verdict.outcome
        return None

    async def check(self, token: str) -> Outcome:
        """Allowed, invalid (unknown, expired or malformed) or forbidden (valid, none of the
        roles).

        A cached verdict (or an implausible token) answers at once; concurrent checks of one
        token share one call; at most `MAX_PENDING_CHECKS` distinct tokens wait for Keystone
        at once (`KeystoneError` beyond, which the middleware answers 503; it also bounds
        validations per client, so one client's flood never reaches this bound alone).
        """
        known = self.known(token)
        if known is not None:
            return known
        verdict = await self._checks.run(token, functools.partial(self._validate, token))
        return verdict.outcome

    async def _validate(self, token: str) -> Verdict:
        response = await self._run(functools.partial(self._get_token, token), pool="validation")
        now = self.clock()
        if response.status_code in (400, 404):  # malformed; unknown, revoked or expired
            verdict = Verdict("invalid", now + NEGATIVE_VERDICT_AGE)
            self.refusals.put(token, verdict)
        elif response.status_code == 200:
            try:
                info = access.create(body=response.json(), auth_token=token)
            except (ValueError, KeyError, TypeError) as error:
                raise KeystoneError(
                    f"Keystone sent a token body it cannot parse: {error}"
                ) from error
            expires = info.expires.timestamp() if info.expires is not None else now
            verdict = judge(
                expires_at=expires,
                roles=frozenset(info.role_names or ()),
                required=self.required_roles,
                now=now,
            )
            if verdict.outcome == "invalid":  # expired already
                verdict = Verdict("invalid", now + NEGATIVE_VERDICT_AGE)
                self.refusals.put(token, verdict)
            else:
                self.verdicts.put(token, verdict)
        else:  # 401/403: the agent's own credentials (keystoneauth retried a 401 already)
            raise KeystoneError(f"Keystone answered {response.status_code} validating a token")
        return verdict

    def _get_token(self, token: str) -> Any:
        """``GET /v3/auth/tokens`` (identity endpoint from the catalog); blocking."""
        return self.session.get(
            "auth/tokens",
            endpoint_filter={
                "service_type": "identity",
                "interface": self.cloud.get_interface("identity"),
                "region_name": self.cloud.region_name,
                "version": (3, 0),
            },
            headers={"X-Subject-Token": token},
            raise_exc=False,
        )


def make_keystone(
    os_cloud: str | None,
    *,
    roles: frozenset[str],
    clock: Callable[[], float],
    timeout: float,
) -> Keystone | None:
    """The `Keystone` of the ``os_cloud`` setting, or None without one (reads clouds.yaml)."""
    if os_cloud is None:
        return None
    return Keystone(load_cloud(os_cloud), required_roles=roles, clock=clock, timeout=timeout)
