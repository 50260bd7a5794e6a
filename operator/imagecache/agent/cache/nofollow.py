"""Opening cache files without following links: the one way the agent opens what it serves,
hashes or commits.

Anything under the cache directory may have been replaced while the agent runs (by another
process with access to the volume, or a bug): ``images/<id>`` swapped for a symlink to a file
outside the cache must never make the agent read, serve or write that file. Every open here
uses ``O_NOFOLLOW`` (a symlink as the last component fails with ``ELOOP``) and ``O_NONBLOCK``
(a fifo swapped in cannot block the open), and the opened descriptor must be a regular file
(``fstat``), else `NotRegularFile`. Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """The path is a symlink, a directory, a fifo or a device: not a cache file."""


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> io.FileIO:
    """`path` opened unbuffered (``flags`` as for `os.open`), never through a link.

    Raises `FileNotFoundError` when it is missing and `NotRegularFile` when it is not a
    regular file (a symlink included); the descriptor is closed in both cases.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        if path.is_symlink():
            raise NotRegularFile(f"{path.name} is a symbolic link, not a cache file") from error
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{path.name} is not a regular file")
        os.set_blocking(fd, True)
        file_mode = {os.O_RDONLY: "rb", os.O_WRONLY: "wb"}.get(flags & os.O_ACCMODE, "r+b")
        return io.FileIO(fd, file_mode, closefd=True)  # handed out: the caller closes it
    except BaseException:
        os.close(fd)
        raise
