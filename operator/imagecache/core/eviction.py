"""Which cached images to evict so a new one fits under ``max_size`` (SPEC §2.5, LRU)."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A cached image as eviction sees it."""

    image_id: str
    size: int
    last_accessed: float


class DoesNotFit(Exception):
    """The incoming image cannot fit (bigger than the limit, or too much is pinned)."""


def choose_victims(
    *,
    cached: Iterable[Candidate],
    pinned: Set[str],
    used: int,
    incoming: int,
    max_size: int,
) -> list[str]:
    """Least-recently-used images to evict so ``used + incoming <= max_size``.

    ``used`` counts every byte already committed (cached plus reserved by downloads in flight);
    images in ``pinned`` (being served) are never chosen. Raises `DoesNotFit` if no choice works.
    """
    if incoming > max_size:
        raise DoesNotFit(f"image of {incoming} bytes is larger than max_size {max_size}")
    excess = used + incoming - max_size
    if excess <= 0:
        return []  # ``cached`` is not even looked at: the common case costs nothing
    victims: list[str] = []
    for candidate in sorted(cached, key=lambda c: (c.last_accessed, c.image_id)):
        if excess <= 0:
            break
        if candidate.image_id in pinned:
            continue
        victims.append(candidate.image_id)
        excess -= candidate.size
    if excess > 0:
        raise DoesNotFit(f"cannot free {excess} more bytes: the rest of the cache is in use")
    return victims
