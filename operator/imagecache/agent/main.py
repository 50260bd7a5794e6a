"""`imagecache-agent`: parse settings, configure logs, serve until SIGTERM/SIGINT, exit 0."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from imagecache.agent.app import create_app
from imagecache.agent.db import DatabaseError
from imagecache.agent.logs import configure_logging
from imagecache.agent.settings import SettingsError, load_settings


def _bound_malloc() -> None:
    """One glibc malloc arena for the whole process, so memory stays constant.

    Reader, hasher and writer threads pass 4 MiB chunks around. With glibc's default of one
    arena per thread (up to 8 × cores) freed chunks pile up in every thread's arena and RSS grows
    with the thread count. Pinning the mmap threshold instead (every chunk a fresh mmap) also
    bounds RSS but costs ~20 % of caching throughput in page faults; a single arena keeps heap
    reuse, and its lock is taken once per 4 MiB chunk. bench/README.md has both measurements.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_arena_max = -8
        libc.mallopt(m_arena_max, 1)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except SettingsError as error:
        print(f"imagecache-agent: {error}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_format, settings.log_level)
    _bound_malloc()
    log = logging.getLogger("imagecache.agent")
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"imagecache-agent: invalid setting cache_dir: {error}", file=sys.stderr)
        sys.exit(2)
    log.info(
        "starting on %s, upstream %s",
        settings.listen,
        settings.upstream,
        extra={"event": "starting"},
    )
    # run_app turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, close
    # connections within `shutdown_timeout`, then the cleanup contexts (workers, database).
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.drain_timeout,
            print=None,
            access_log=None,
            handle_signals=True,
        )
    except (OSError, DatabaseError) as error:  # cannot bind, cache dir or database unusable
        log.debug("start failed", exc_info=True)
        print(f"imagecache-agent: cannot start: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("stopped", extra={"event": "stopped"})


if __name__ == "__main__":
    main()
