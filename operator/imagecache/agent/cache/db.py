"""The durable queue and cache metadata: one SQLite database (WAL) in the cache directory.

All SQLite calls run on one dedicated thread, on one connection holding an exclusive lock (one
agent per cache directory; with no shared-memory file to create, the database opens and reads
on a full disk). Writes are group-committed: every write queued while a transaction is being
committed goes into the next one, so many concurrent `PUT`s share one fsync; `save` returns only
after the transaction holding its row has committed. A write the full disk refuses raises
`DatabaseFull` (answered 507), any other failure `DatabaseError` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from imagecache.core.images import ImageRecord

T = TypeVar("T")

log = logging.getLogger("imagecache.agent.cache.db")

WRITER_CLOSE_TIMEOUT = 30.0  # seconds `close` waits for the pending writes
CONNECTION_CLOSE_TIMEOUT = 5.0  # seconds `close` waits for SQLite to close the connection

_COLUMNS = [f.name for f in fields(ImageRecord)]


def _row(record: ImageRecord) -> tuple[Any, ...]:
    """A record's column values (`dataclasses.astuple` deep-copies: slow on the PUT path)."""
    return tuple(getattr(record, name) for name in _COLUMNS)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY, state TEXT NOT NULL, seq INTEGER NOT NULL, size INTEGER,
    bytes INTEGER NOT NULL, attempts INTEGER NOT NULL, error TEXT, checksum TEXT,
    queued_at REAL, started_at REAL, cached_at REAL, last_accessed REAL, hits INTEGER NOT NULL
) WITHOUT ROWID;
"""
_UPSERT = (
    f"INSERT OR REPLACE INTO images ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)

# Columns added since the first schema (a database written by an older agent gains them).
_ADDED_COLUMNS = {"source": "TEXT", "fallback": "TEXT"}

Op = tuple[str, tuple[Any, ...]]


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE images ADD COLUMN {name} {kind}")


class DatabaseError(Exception):
    """The database cannot be opened or written."""


class DatabaseFull(DatabaseError):
    """The disk holding the database is full (SQLite's ``SQLITE_FULL``, or ``ENOSPC``)."""


def _translated(error: Exception) -> DatabaseError:
    """One `DatabaseError` for any failure of a SQLite call; a full disk is `DatabaseFull`."""
    if isinstance(error, DatabaseError):
        return error
    code = getattr(error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    ):
        return DatabaseFull(f"disk full: {error}")
    return DatabaseError(str(error))


class Database:
    """Image records, persisted; open with `open()`, close with `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[list[Op], asyncio.Future[None] | None]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.is_open = False
        self._closing = False

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def open(self) -> list[ImageRecord]:
        """Open (creating the schema) and return every stored record."""

        def connect() -> list[ImageRecord]:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # One agent owns the directory: exclusive locking keeps the WAL index in memory
            # (no -shm file to create), so a database opens, and reads, on a full disk.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            _add_missing_columns(conn)
            self._conn = conn
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM images").fetchall()
            return [ImageRecord(*row) for row in rows]

        try:
            records = await self._run(connect)
        except (sqlite3.Error, OSError) as error:
            failure = _translated(error)
            raise type(failure)(f"cannot open {self.path}: {failure}") from error
        self._writer = asyncio.create_task(self._write_loop(), name="db-writer")
        self.is_open = True
        return records

    async def close(self) -> None:
        """Commit what is pending, stop the writer, close the connection — each step bounded,
        and every step taken even when an earlier one timed out (then `TimeoutError`)."""
        self.is_open = False
        self._closing = True
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                self._wakeup.set()
                try:
                    await asyncio.wait_for(asyncio.shield(writer), timeout=WRITER_CLOSE_TIMEOUT)
                finally:
                    writer.cancel()
        finally:
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    await asyncio.wait_for(self._run(conn.close), CONNECTION_CLOSE_TIMEOUT)
            finally:
                self._executor.shutdown(wait=False)

    # --- writes ----------------------------------------------------------------------------
    async def save(self, *records: ImageRecord) -> None:
        """Upsert records; returns once they are committed."""
        await self._submit([(_UPSERT, _row(r)) for r in records])

    def save_soon(self, *records: ImageRecord) -> None:
        """Upsert records in the next transaction, without waiting (hits, progress)."""
        self._enqueue([(_UPSERT, _row(r)) for r in records], None)

    async def delete(self, *image_ids: str) -> None:
        await self._submit([("DELETE FROM images WHERE image_id = ?", (i,)) for i in image_ids])

    async def _submit(self, ops: list[Op]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(ops, future)
        await future

    def _enqueue(self, ops: list[Op], future: asyncio.Future[None] | None) -> None:
        if not self.is_open:
            raise DatabaseError("database is closed")
        self._pending.append((ops, future))
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            try:
                await self._run(
                    functools.partial(self._commit, [op for ops, _ in batch for op in ops])
                )
            except Exception as error:  # every waiter learns of it; deferred writes are logged
                deferred = sum(len(ops) for ops, future in batch if future is None)
                if deferred:
                    log.warning(
                        "%d deferred database writes (hits, progress) failed: %s",
                        deferred,
                        _translated(error),
                        extra={"event": "db_write_failed"},
                    )
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(_translated(error))
            else:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
            if self._closing and not self._pending:
                return

    def _commit(self, ops: list[Op]) -> None:
        conn = self._conn
        if conn is None:
            raise DatabaseError("database is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in ops:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that fails (disk full) may leave the transaction open: end it, or every
            # later BEGIN fails too, long after the disk has room again.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
