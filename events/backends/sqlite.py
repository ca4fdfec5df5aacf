"""The event store on a SQLite file through aiosqlite.

The log's write lock is ``BEGIN IMMEDIATE``, emitted on the one pooled writer connection, so a
writer waits for another (up to ``busy_timeout``) before it reads the stream heads rather than
failing at commit. The hot paths (BEGIN, stream heads, the insert of an append's rows, read_all)
talk to aiosqlite's own connection: one trip to its thread per call instead of the three or four
a statement through SQLAlchemy's adapter costs. What the driver raises on those paths is not
wrapped by SQLAlchemy, so it is translated here into the error SQLAlchemy would have raised.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from events.backends.base import COLUMN_NAMES, COLUMNS, SqlEventStore, StreamHeads, take_heads
from events.store import StoredEvent
from events.vault import Vault

WRITER_CACHE_KIB = 16_384
"""The writer's page cache (SQLite's default is 2 MiB). A contact's index entries land at random
pages (keyed by email hash, 12 MB of index at 100,000 contacts): past the default, each import chunk
re-read much of the index, so imports slowed as the table grew (a 10,000-contact request at 100,000
contacts: its projection's inserts 0.12 s instead of 0.09 s). Pages are taken as needed, up to this,
which a long-running process holds (peak RSS about 16 MB higher)."""
WRITER_CHECKPOINT_PAGES = 10_000
"""WAL pages (40 MiB) after which a commit of the writer copies them into the database file (SQLite's
default: 1,000). A 2,000-contact chunk of an import writes about 1,300 pages (5 MB), many of them
index pages the next chunk writes again: at the default every such commit checkpointed, copying
them to the file and syncing it each time (18 ms of CPU per commit; about 10 ms now)."""
DEFAULT_BUSY_TIMEOUT_MS = 60_000
"""How long an SQLite write waits for another process's lock before failing with "database is locked"."""
LOOKUP_CHUNK = 5000
"""Bound parameters per look-up of stream heads (SQLite allows 32,766)."""
INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_KEYS = "INSERT INTO vault_keys (subject_id, workspace_id, wrapped_key) VALUES (?, ?, ?)"


def sqlite_busy_timeout_ms(url: str | URL) -> int:
    """The SQLite lock wait in milliseconds: the URL's ``timeout`` (seconds), else 60 s.

    ``timeout`` is the name SQLAlchemy's SQLite dialects and :func:`sqlite3.connect` already give
    the wait (``sqlite+aiosqlite:///mail.db?timeout=5``); without this reading, the store's own
    ``PRAGMA busy_timeout`` would silently override it. A bad value is refused here, at open,
    rather than at the first connection.
    """
    given = make_url(url).query.get("timeout") if isinstance(url, str) else url.query.get("timeout")
    if given is None:
        return DEFAULT_BUSY_TIMEOUT_MS
    text = given if isinstance(given, str) else given[-1]
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86_400:
        raise ValueError(f"the SQLite URL's timeout must be a number of seconds from 0 to 86400, not {text!r}")
    return round(seconds * 1000)


def install_pragmas(engine: AsyncEngine, *, immediate: bool, busy_timeout_ms: int) -> None:
    """Every connection of ``engine``: WAL, the lock wait, and our own BEGIN (IMMEDIATE for writers)."""

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={busy_timeout_ms}", "synchronous=NORMAL",
                       "secure_delete=ON", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        if immediate:  # the writer: the one connection that inserts and commits, so the one these concern
            cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        # Straight on aiosqlite's connection: one trip to its thread instead of the three or
        # four (cursor, execute, close) a statement through the adapter costs.
        driver = conn.connection.driver_connection
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        try:
            await_only(driver.execute_fetchall(statement))
        except sqlite3.Error as exc:  # raised outside SQLAlchemy's own wrapping: wrap it as it would
            raise translated(statement, exc) from exc


def translated(statement: str, exc: sqlite3.Error) -> StatementError:
    """sqlite3's own error as the SQLAlchemy error it would have become through SQLAlchemy.

    The store talks to aiosqlite directly on its hot paths (and at BEGIN), where SQLAlchemy does not
    wrap what the driver raises. Callers tell a database that is locked past ``busy_timeout`` or
    full (``OperationalError``: retry, the write may go through later) from a bug by SQLAlchemy's
    classes; a bare ``sqlite3.OperationalError`` would be taken for a bug, and an outcome already
    sent by SMTP would not be recorded.
    """
    return DBAPIError.instance(statement, None, exc, sqlite3.Error)


async def driver_of(conn: AsyncConnection) -> Any:
    """aiosqlite's own connection under ``conn`` (same transaction): one thread trip per call.

    Through SQLAlchemy's adapter a statement costs three or four trips to aiosqlite's thread
    (cursor, execute, fetch, close), about 80 µs each, which is most of a one-event append.
    """
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def fetch(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> Any:
    """A SELECT straight on aiosqlite, its failures wrapped as SQLAlchemy's (see :func:`translated`)."""
    try:
        return await (await driver_of(conn)).execute_fetchall(sql, params)
    except sqlite3.Error as exc:
        raise translated(sql, exc) from exc


class SqliteEventStore(SqlEventStore):
    """The log in a SQLite file: one pooled writer holding ``BEGIN IMMEDIATE``, a few readers."""

    @classmethod
    async def open(cls, url: str, vault: Vault, now: Callable[[], datetime], *,
                   create: bool = True) -> SqliteEventStore:
        busy_timeout = sqlite_busy_timeout_ms(url)  # a bad timeout is refused before anything is opened
        write, read = cls._engines(url, busy_timeout)
        store: SqliteEventStore = await cls._opened(url, vault, now, write, read, create=create)
        return store

    @staticmethod
    def _engines(url: str, busy_timeout_ms: int) -> tuple[AsyncEngine, AsyncEngine]:
        """The writer and reader engines on ``url``, their connections set up by :func:`install_pragmas`."""
        # One pooled writer (SQLite has one writer anyway) and a few readers: opening a connection
        # per transaction would re-read the schema and checkpoint the WAL every time.
        # Every use of the writer ends its transaction itself (begin() commits or rolls back), so
        # the pool's extra rollback on check-in would only cost a trip to aiosqlite's thread.
        write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=300,
                                    pool_reset_on_return=None)
        read = create_async_engine(url, pool_size=4, max_overflow=4, pool_timeout=300)
        install_pragmas(write, immediate=True, busy_timeout_ms=busy_timeout_ms)
        install_pragmas(read, immediate=False, busy_timeout_ms=busy_timeout_ms)
        return write, read

    async def _lock_log(self, conn: AsyncConnection) -> None:
        """Nothing more: the writer's BEGIN IMMEDIATE already holds SQLite's one write lock."""

    async def _before_commit(self, conn: AsyncConnection, pending: Sequence[StoredEvent]) -> None:
        """Nothing: every process sharing a SQLite file polls it; there is no channel to notify."""

    async def _insert_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """The rows through the driver's executemany with plain tuples."""
        driver = await driver_of(conn)
        try:
            # The cursor is left to the garbage collector: closing it would be one more trip to
            # the thread for a statement that is already finished and reset.
            await driver.executemany(INSERT, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(INSERT, None, exc) from exc
        except sqlite3.Error as exc:  # locked past busy_timeout, disk full, ...
            raise translated(INSERT, exc) from exc

    async def _wrapped_keys(self, conn: AsyncConnection, subjects: Sequence[str]) -> list[tuple[str, bytes]]:
        """The key rows on aiosqlite's own connection, 5,000 subjects per query (the portable path
        asks 400 at a time through SQLAlchemy, which an import of thousands of contacts felt)."""
        driver = await driver_of(conn)
        found: list[tuple[str, bytes]] = []
        for start in range(0, len(subjects), LOOKUP_CHUNK):
            part = tuple(subjects[start:start + LOOKUP_CHUNK])
            sql = f"SELECT subject_id, wrapped_key FROM vault_keys WHERE subject_id IN ({','.join('?' * len(part))})"
            try:
                found.extend(await driver.execute_fetchall(sql, part))
            except sqlite3.Error as exc:
                raise translated(sql, exc) from exc
        return found

    async def _insert_keys(self, conn: AsyncConnection, rows: list[tuple[str, str, bytes]]) -> None:
        """The key rows through the driver's executemany with plain tuples, like the events' rows."""
        driver = await driver_of(conn)
        try:
            await driver.executemany(INSERT_KEYS, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(INSERT_KEYS, None, exc) from exc
        except sqlite3.Error as exc:
            raise translated(INSERT_KEYS, exc) from exc

    async def _heads_and_top(self, conn: AsyncConnection, names: Sequence[str]) -> tuple[StreamHeads, int]:
        heads: StreamHeads = {}
        top = 0
        driver = await driver_of(conn)
        for start in range(0, len(names), LOOKUP_CHUNK):
            part = names[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            sql = f"SELECT stream, version, last_hash FROM streams WHERE stream IN ({marks})"
            if start == 0:
                sql += " UNION ALL SELECT NULL, COALESCE(MAX(position), 0), NULL FROM events"
            try:
                found = await driver.execute_fetchall(sql, tuple(part))
            except sqlite3.Error as exc:
                raise translated(sql, exc) from exc
            found_top = take_heads(found, heads)
            top = top if found_top is None else found_top
        return heads, top

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        workspace_id: str | None = None,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        until_position: int | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[StoredEvent]:
        """read_all on aiosqlite's own connection: one trip to its thread and plain tuples, where the
        same SELECT through SQLAlchemy costs four trips and a Row object per event."""
        where: list[str] = ["position > ?"]
        params: list[int | str] = [after]
        if workspace_id is not None:
            where.append("workspace_id = ?")
            params.append(workspace_id)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(types)
        if stream is not None:
            where.append("stream = ?")
            params.append(stream)
        if until_position is not None:
            where.append("position <= ?")
            params.append(until_position)
        sql = f"SELECT {COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY position LIMIT ?"
        params.append(limit)
        if conn is None:
            async with self.reading() as own:
                rows = await fetch(own, sql, params)
                return await self._decode(own, COLUMN_NAMES, rows)
        rows = await fetch(conn, sql, params)
        return await self._decode(conn, COLUMN_NAMES, rows)
