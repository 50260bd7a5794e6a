"""The peer rule (agent.peer_policy): which X-Image-Cache-Source values an agent accepts.

Covers: CIDR lists parsed (blanks skipped, a bad entry named); a hint inside the networks comes
back as its canonical base URL (IPv6 bracketed, trailing slash dropped, port kept); refused:
no networks, outside them, host names, user info, paths, queries, fragments, other schemes,
bad ports, over-long values.
"""

from __future__ import annotations

import pytest

from imagecache.agent.peer_policy import PeerRefused, check_peer, parse_networks

NETWORKS = parse_networks("10.244.0.0/16, ,fd00::/8")


def test_parse_networks() -> None:
    assert [str(n) for n in NETWORKS] == ["10.244.0.0/16", "fd00::/8"]
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="not a CIDR: 'pods'"):
        parse_networks("10.0.0.0/8,pods")


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        pytest.param("http://10.244.1.7:9292", "http://10.244.1.7:9292", id="ipv4"),
        pytest.param("http://10.244.1.7:9292/", "http://10.244.1.7:9292", id="trailing-slash"),
        pytest.param("https://10.244.1.7", "https://10.244.1.7", id="no-port"),
        pytest.param("http://[fd00::0:7]:9292", "http://[fd00::7]:9292", id="ipv6"),
    ],
)
def test_accepted(hint: str, expected: str) -> None:
    assert check_peer(hint, NETWORKS) == expected


@pytest.mark.parametrize(
    ("hint", "networks", "why"),
    [
        pytest.param("http://10.244.1.7:9292", (), "peer_networks is empty", id="no-networks"),
        pytest.param("http://10.0.0.1:9292", NETWORKS, "outside", id="outside"),
        pytest.param("http://agent.local:9292", NETWORKS, "by IP", id="host-name"),
        pytest.param("http://u@10.244.1.7", NETWORKS, "user info", id="user"),
        pytest.param("http://10.244.1.7/v2/images", NETWORKS, "base URL", id="path"),
        pytest.param("http://10.244.1.7/?x=1", NETWORKS, "base URL", id="query"),
        pytest.param("http://10.244.1.7/#f", NETWORKS, "base URL", id="fragment"),
        pytest.param("file:///etc/passwd", NETWORKS, "http", id="scheme"),
        pytest.param("http://10.244.1.7:99999", NETWORKS, "not a URL", id="port"),
        pytest.param("http://10.244.1.7/" + "a" * 300, NETWORKS, "too long", id="long"),
    ],
)
def test_refused(hint: str, networks: tuple[object, ...], why: str) -> None:
    with pytest.raises(PeerRefused, match=why):
        check_peer(hint, networks)  # type: ignore[arg-type]
