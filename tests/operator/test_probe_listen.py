"""Where the operator's probe server listens: ``::`` is dual-stack, as the chart sets it.

Covers: with ``metrics_host = "::"`` the kubelet reaches /healthz over IPv4 and over IPv6 (asyncio
alone would make ``::`` IPv6-only, so an IPv4 cluster's probes would fail); an explicit IPv4
address stays IPv4-only.
"""

from __future__ import annotations

import socket

import aiohttp
import pytest

from imagecache.controller.metrics import OperatorMetrics, bind_host, serve_probes


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_port() -> int:
    """A port free on both families now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port = int(probe.getsockname()[1])
    return port


async def status_of(url: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return response.status
    except aiohttp.ClientConnectionError:
        return None


def test_only_the_any_address_of_ipv6_is_widened() -> None:
    assert bind_host("::") is None
    assert bind_host("0.0.0.0") == "0.0.0.0"
    assert bind_host("127.0.0.1") == "127.0.0.1"
    assert bind_host("::1") == "::1"


async def test_any_ipv6_address_also_answers_ipv4() -> None:
    if not has_ipv6_loopback():
        pytest.skip("this kernel has no IPv6 loopback")
    port = free_port()
    async with serve_probes(metrics=OperatorMetrics(), host="::", port=port, alive=lambda: True):
        assert await status_of(f"http://127.0.0.1:{port}/healthz") == 200
        assert await status_of(f"http://[::1]:{port}/healthz") == 200


async def test_an_ipv4_address_stays_ipv4() -> None:
    if not has_ipv6_loopback():
        pytest.skip("this kernel has no IPv6 loopback")
    port = free_port()
    async with serve_probes(
        metrics=OperatorMetrics(), host="127.0.0.1", port=port, alive=lambda: True
    ):
        assert await status_of(f"http://127.0.0.1:{port}/healthz") == 200
        assert await status_of(f"http://[::1]:{port}/healthz") is None
