"""AgentSettings (SPEC §2.1): flags over ``IMAGECACHE_*`` variables, defaults, parsing, and
one-line errors naming the setting."""

from __future__ import annotations

import pytest

from imagecache.agent.settings import SettingsError, load_settings, split_listen


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(["--upstream", "file:///images"])
    assert (settings.host, settings.port) == ("127.0.0.1", 9292)
    assert settings.workers == 2 and settings.max_size == 10 * 2**30
    assert settings.stall_timeout == 60 and settings.retries == 3 and settings.cache_on_read


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGECACHE_UPSTREAM", "http://127.0.0.1:1/")
    monkeypatch.setenv("IMAGECACHE_WORKERS", "5")
    monkeypatch.setenv("IMAGECACHE_MAX_SIZE", "1G")
    monkeypatch.setenv("IMAGECACHE_CACHE_ON_READ", "false")
    monkeypatch.setenv("IMAGECACHE_OPERATOR_NAMESPACES", "not-ours")
    settings = load_settings([])
    assert (settings.workers, settings.max_size, settings.cache_on_read) == (5, 2**30, False)
    settings = load_settings(["--workers", "7", "--cache-on-read", "--max-size", "512M"])
    assert (settings.workers, settings.max_size, settings.cache_on_read) == (7, 2**29, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("127.0.0.1:9292", ("127.0.0.1", 9292), id="ipv4"),
        pytest.param("[::1]:8080", ("::1", 8080), id="ipv6"),
        pytest.param("localhost:1", ("localhost", 1), id="name"),
    ],
)
def test_split_listen(value: str, expected: tuple[str, int]) -> None:
    assert split_listen(value) == expected


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--upstream", "file:///x", "--listen", ":80"], "listen", id="no-host"),
        pytest.param(["--upstream", "file:///x", "--listen", "h:99999"], "listen", id="port"),
        pytest.param(["--upstream", "file://relative"], "upstream", id="relative-file"),
        pytest.param(["--upstream", "file:///x", "--retries", "0"], "retries", id="retries"),
        pytest.param(
            ["--upstream", "file:///x", "--stall-timeout", "0"], "stall_timeout", id="stall"
        ),
        pytest.param(["--upstream", "file:///x", "--log-format", "xml"], "log_format", id="format"),
        pytest.param(["--upstream", "file:///x", "--listen", "[::]:80"], "listen", id="open-v6"),
        pytest.param(
            ["--upstream", "file:///x", "--peer-networks", "10.0.0.0/8,pods"],
            "peer_networks",
            id="peer-networks",
        ),
        pytest.param(
            ["--upstream", "file:///x", "--peer-serve-limit", "0"],
            "peer_serve_limit",
            id="peer-serve-limit",
        ),
    ],
)
def test_bad_settings_name_the_setting(args: list[str], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(args)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"invalid setting {needle} ")


def test_non_loopback_allowed_with_token_or_opt_out(tmp_path: object) -> None:
    load_settings(["--upstream", "file:///x", "--listen", "0.0.0.0:80", "--insecure-no-auth"])
    load_settings(["--upstream", "file:///x", "--listen", "0.0.0.0:80", "--token-file", "/t"])


def test_peer_networks_parse_from_the_flag_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(
        ["--upstream", "file:///x", "--peer-networks", "10.244.0.0/16, fd00::/8"]
    )
    assert [str(n) for n in settings.peers] == ["10.244.0.0/16", "fd00::/8"]
    monkeypatch.setenv("IMAGECACHE_PEER_NETWORKS", "192.168.0.0/24")
    assert [str(n) for n in load_settings(["--upstream", "file:///x"]).peers] == ["192.168.0.0/24"]
    monkeypatch.delenv("IMAGECACHE_PEER_NETWORKS")
    assert load_settings(["--upstream", "file:///x"]).peers == ()
