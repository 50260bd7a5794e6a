"""`imagecache-agent`: note stop signals, parse and check settings, log, serve, exit 0.

SIGTERM/SIGINT are noted from the first line of `main` (`StopRequest`): a signal during
imports, settings or startup ends the process with status 0 once startup is done, like one
while serving. That is why this module imports next to nothing at the top and the agent itself
inside `main`, after the handlers are in place: importing aiohttp and pydantic
takes most of a second, during which the default action of SIGTERM would kill the process.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _bound_malloc() -> None:
    """One glibc malloc arena for the whole process, so memory stays constant.

    Reader, hasher and writer threads pass 4 MiB chunks around. With glibc's default of one
    arena per thread (up to 8 × cores) freed chunks pile up in every thread's arena and RSS grows
    with the thread count. Pinning the mmap threshold instead (every chunk a fresh mmap) also
    bounds RSS but costs ~20 % of caching throughput in page faults; a single arena keeps heap
    reuse, and its lock is taken once per 4 MiB chunk. bench/README.md has both measurements.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_arena_max = -8
        libc.mallopt(m_arena_max, 1)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main(argv: Sequence[str] | None = None) -> None:
    from imagecache.agent.signals import StopRequest  # standard library only: see above

    stop = StopRequest()
    stop.install()

    import asyncio
    import logging

    from imagecache.agent.cache.db import DatabaseError
    from imagecache.agent.http.server import serve
    from imagecache.agent.keystone import KeystoneError
    from imagecache.agent.logs import configure_logging
    from imagecache.agent.preflight import check_paths
    from imagecache.agent.settings import SettingsError, load_settings
    from imagecache.agent.token_review import TokenReviewError

    try:
        settings = load_settings(argv)
        check_paths(settings)
    except SettingsError as error:
        print(f"imagecache-agent: {error}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_format, settings.log_level)
    _bound_malloc()
    log = logging.getLogger("imagecache.agent")
    log.info(
        "starting on %s, upstream %s",
        settings.listen,
        settings.upstream,
        extra={"event": "starting"},
    )
    try:
        asyncio.run(serve(settings, stop))
    except KeystoneError as error:  # os_cloud names no usable clouds.yaml entry
        print(
            f"imagecache-agent: invalid setting os_cloud (--os-cloud / IMAGECACHE_OS_CLOUD): "
            f"{error}",
            file=sys.stderr,
        )
        sys.exit(2)
    except TokenReviewError as error:  # auth kubernetes without a way to the API
        print(
            f"imagecache-agent: invalid setting kubeconfig (--kubeconfig / IMAGECACHE_KUBECONFIG):"
            f" {error}",
            file=sys.stderr,
        )
        sys.exit(2)
    except (OSError, DatabaseError) as error:  # cannot bind, cache dir or database unusable
        log.debug("start failed", exc_info=True)
        print(f"imagecache-agent: cannot start: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("stopped", extra={"event": "stopped"})


if __name__ == "__main__":
    main()
