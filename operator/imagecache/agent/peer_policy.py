"""Which peer agents a `PUT` may name as a byte source (SPEC §2.9): the ``peer_networks`` rule.

``X-Image-Cache-Source`` makes the agent fetch a URL a client chose, so it is held to a narrow
shape before anything is fetched: ``http(s)://<IP literal>[:port]`` with no user info, path,
query or fragment, and the IP inside one of the ``peer_networks`` CIDRs. A host name is refused
(resolving it would let DNS move the peer outside the networks after the check). The path the
agent then reads is always ``/v2/images/{quoted id}/file`` (upstream.peer), never the client's.

Pure: no I/O. `parse_networks` reads the setting; `check_peer` answers a hint with the
canonical base URL or raises `PeerRefused` saying why.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from imagecache.core.wire import SOURCE_HEADER as SOURCE_HEADER

PEER_READ_HEADER = "X-Image-Cache-Peer-Read"
"""Marks a read from another agent: it is served only from this agent's cache (404 on a miss),
never read through to the upstream, and counts against ``peer_serve_limit``."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerRefused(ValueError):
    """A source hint outside the rule; the message says which part."""


def parse_networks(value: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, fd00::/8"`` → the networks; `ValueError` naming a bad entry."""
    networks: list[Network] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as error:
            raise ValueError(f"not a CIDR: {entry[:64]!r}") from error
    return tuple(networks)


def check_peer(hint: str, networks: tuple[Network, ...]) -> str:
    """The canonical base URL of the peer named by `hint`, or `PeerRefused`."""
    if not networks:
        raise PeerRefused(f"{SOURCE_HEADER} is not accepted: peer_networks is empty")
    if len(hint) > 256:
        raise PeerRefused(f"{SOURCE_HEADER} is too long")
    try:
        parts = urlsplit(hint.strip())
        port = parts.port
    except ValueError as error:
        raise PeerRefused(f"{SOURCE_HEADER} is not a URL: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise PeerRefused(f"{SOURCE_HEADER} must be an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise PeerRefused(f"{SOURCE_HEADER} must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PeerRefused(f"{SOURCE_HEADER} must be a base URL (no path, query or fragment)")
    try:
        address = ipaddress.ip_address(parts.hostname or "")
    except ValueError as error:
        raise PeerRefused(f"{SOURCE_HEADER} must name the peer by IP address") from error
    if not any(address in network for network in networks):
        raise PeerRefused(f"{SOURCE_HEADER} peer {address} is outside peer_networks")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
