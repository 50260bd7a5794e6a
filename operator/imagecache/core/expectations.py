"""Write expectations: what this operator last wrote to each object (pure).

Modelled on OpenKruise's ``ResourceVersionExpectation``: after a status write, remember the
status written and the ``resourceVersion`` the API server returned. The watch delivers that
write later, possibly after further writes; until the object as the watch shows it is at least
as new as our last write, the status to diff against is ours, never the older one the index
still holds. Diffing against an older status is what made a phase "go back" (Cached seen as
Queued again) and wrote the transition, and posted its event, twice.

resourceVersions are opaque in Kubernetes but, from one API server (etcd's revision), they
grow: they are compared as integers, and when either is not an integer only equality counts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Written:
    """One write of ours: the object's uid, the resourceVersion it got, the status, when."""

    uid: str
    resource_version: str
    status: Mapping[str, Any]
    at: float


def is_older(observed: str, written: str) -> bool:
    """True when `observed` is an earlier resourceVersion than `written`."""
    if observed == written:
        return False
    try:
        return int(observed) < int(written)
    except ValueError:
        return False


class WriteExpectations(Generic[K]):
    """Per key, the last write of ours; the base status to diff against."""

    def __init__(self) -> None:
        self._written: dict[K, Written] = {}

    def wrote(self, key: K, written: Written) -> None:
        """Remember a successful write (the answer's resourceVersion and status)."""
        self._written[key] = written

    def last(self, key: K, uid: str) -> Written | None:
        """Our last write to this object (None: none, or it was another object of that name)."""
        written = self._written.get(key)
        return written if written is not None and written.uid == uid else None

    def base(
        self, key: K, *, uid: str, resource_version: str, status: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """The freshest status known: ours while the observed object is older than our write."""
        written = self.last(key, uid)
        if written is not None and is_older(resource_version, written.resource_version):
            return written.status
        return status

    def satisfied(self, key: K, *, uid: str, resource_version: str) -> bool:
        """True when the observed object includes our last write (or we never wrote it)."""
        written = self.last(key, uid)
        return written is None or not is_older(resource_version, written.resource_version)

    def is_echo(self, key: K, *, uid: str, resource_version: str) -> bool:
        """True when the observed object *is* our last write coming back through the watch."""
        written = self.last(key, uid)
        return written is not None and written.resource_version == resource_version

    def caught_up(self, key: K, *, uid: str, resource_version: str) -> None:
        """The watch shows our last write (or later): its status need not be kept any more
        (only when and at which resourceVersion it was written)."""
        written = self.last(key, uid)
        if (
            written is not None
            and written.status
            and not is_older(resource_version, written.resource_version)
        ):
            self._written[key] = Written(
                uid=written.uid, resource_version=written.resource_version, status={}, at=written.at
            )

    def forget(self, key: K) -> None:
        """The object is gone."""
        self._written.pop(key, None)

    def __len__(self) -> int:
        return len(self._written)
