"""The agent's one token-file reader (agent/token_file.py), used for client tokens and for the
upstream token: comments and blanks ignored, a rotated file re-read, a missing file empty, the
file touched only from a worker thread (never on the event loop), a burst sharing one check."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from imagecache.agent import token_file
from imagecache.agent.http.auth import AcceptedTokens
from imagecache.agent.token_file import TokenFile
from imagecache.agent.upstream.auth import StaticToken


async def test_tokens_skip_comments_and_blanks_for_both_uses(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# rotated 2026-11-30\n\n  first \nsecond\n")
    source = TokenFile(path)
    assert await source.tokens() == ("first", "second")
    assert await StaticToken(source).headers() == {"X-Auth-Token": "first"}
    accepted = AcceptedTokens(source)
    assert await accepted.accepts("second")
    assert not await accepted.accepts("# rotated 2026-11-30")


async def test_a_rotated_file_is_read_again_and_a_missing_one_holds_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    source = TokenFile(path)
    assert await source.first() == "old"
    replacement = tmp_path / "tokens.new"
    replacement.write_text("new\n")
    os.replace(replacement, path)  # as a Secret volume swaps its files: a new inode
    assert await source.first() == "new"
    path.unlink()
    assert await source.tokens() == ()
    assert await StaticToken(source).headers() == {}


async def test_the_file_is_only_touched_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text("t\n")
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []
    real_stat = os.stat

    def recording_stat(target: object) -> os.stat_result:
        threads.append(threading.current_thread())
        return real_stat(target)  # type: ignore[arg-type]

    monkeypatch.setattr(token_file.os, "stat", recording_stat)
    source = TokenFile(path)
    results = await asyncio.gather(*(source.first() for _ in range(50)))
    assert results == ["t"] * 50
    assert threads and loop_thread not in threads
    assert len(threads) < 50  # a burst shares the check in flight
