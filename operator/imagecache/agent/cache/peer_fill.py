"""Fleet fill: choosing a download's byte source, and falling back from a peer (SPEC §2.9).

A `PUT` with ``X-Image-Cache-Source`` stores the peer's base URL with the queued record (it
survives a restart) and hands the caller's credential over as a `PeerGrant`, **in memory
only**: a credential is never written to disk. A download then takes its bytes from the peer
when all of these hold, else from the upstream with the reason in the image's report:

- the record still names a peer (a fallback clears it);
- a grant is in memory (after a restart there is none: ``no_credential``);
- the upstream's metadata carries a digest (``checksum`` or ``os_hash_value``) to verify the
  peer's bytes against (else ``no_digest``): peers are untrusted, the upstream decides.

Any peer failure — refused, 404, 401, 429, a stall, a short or long body, bytes that fail
verification — falls back to the upstream at once, from byte 0 (`PeerFailed` carries the
reason); failures of this agent's own disk are not the peer's and are raised as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from imagecache.agent.cache.fetching import FetchError
from imagecache.agent.upstream.peer import PeerSource
from imagecache.agent.upstream.port import ImageMeta, Upstream
from imagecache.core.images import ImageRecord

LOCAL_REASONS = frozenset({"disk_full", "write_failed", "no_room", "too_large"})
"""Failures of this agent (its disk, its room), not of the peer: no fallback for these."""


@dataclass(frozen=True)
class PeerGrant:
    """A peer named by a `PUT`, and the credential to present to it (never persisted)."""

    url: str
    credential: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class PeerFailed(Exception):
    """The peer cannot be used (or failed): `reason` labels the metric, `message` the report."""

    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


def peer_unusable(record: ImageRecord, grant: PeerGrant | None, meta: ImageMeta) -> str | None:
    """Why the record's peer cannot be tried for this attempt (a metric label), or None."""
    if record.source is None:
        return None
    if grant is None or grant.url != record.source:
        return "no_credential"
    if not (meta.checksum or meta.os_hash_value):
        return "no_digest"
    return None


UNUSABLE_MESSAGES = {
    "no_credential": "peer {url} not used: its credential is kept in memory only and is gone "
    "(restart); the image comes from the upstream",
    "no_digest": "peer {url} ignored: the upstream gives no digest to verify its bytes "
    "against; the image comes from the upstream",
}


async def fill_from_peer(
    grant: PeerGrant,
    *,
    stall_timeout: float,
    download: Callable[[Upstream], Awaitable[object]],
) -> None:
    """Run `download` with the peer as its byte source; `PeerFailed` when the peer failed it.

    `download(source)` is one `fetching.fetch` against `source`: it verifies the bytes
    against the upstream's metadata and commits them only when they match.
    """
    source = PeerSource(grant.url, credential=grant.credential, stall_timeout=stall_timeout)
    try:
        await download(source)
    except FetchError as error:
        if error.reason in LOCAL_REASONS:
            raise
        reason = error.reason.removeprefix("upstream_")
        raise PeerFailed(reason, f"peer {grant.url} failed ({reason}: {error})") from error
    finally:
        await source.close()
