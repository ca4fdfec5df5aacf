"""The append-only event store on SQLAlchemy 2 async: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Every append takes the log's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``LOCK TABLE
events IN EXCLUSIVE MODE``), assigns positions under it and applies the inline projections in the
same transaction. Positions therefore commit in order on both backends, so a reader that follows
``read_all(after=...)`` can never skip an event that committed late.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import URL, event, func, make_url, select
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from events import schema
from events.chain import GENESIS, ChainHasher
from events.context import event_metadata
from events.registry import (
    Event,
    dumps,
    encode_data,
    event_class,
    format_time,
    from_owned_data,
    loads,
    parse_time,
    to_data,
)
from events.vault import Vault


class ConcurrencyError(Exception):
    """Another writer appended to the stream first: reload, decide again, retry."""

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(f"stream {stream}: expected version {expected}, found {actual}")
        self.stream, self.expected, self.actual = stream, expected, actual


class StoredEvent(NamedTuple):
    """An event as it lives in the log, with its clear (decrypted) domain event.

    Immutable like the events it carries; a named tuple because reads build one per row and a
    tuple is built in one step where a frozen dataclass sets its ten fields one by one.
    """

    position: int
    stream: str
    version: int
    type: str
    type_version: int
    event: Event
    metadata: dict[str, Any]
    recorded_at: datetime
    workspace_id: str
    hash: str


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Events for one stream. ``expected_version``: exact version (0 = new stream) or None (any)."""

    stream: str
    events: Sequence[Event]
    expected_version: int | None = None
    workspace_id: str | None = None


class InlineProjector(Protocol):
    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None: ...


AfterCommit = Callable[[Sequence[StoredEvent]], Awaitable[None]]
_CHUNK = 400
_SQLITE_CHUNK = 5000  # bound parameters per look-up (SQLite allows 32,766)
_COLUMNS = "position, stream, version, type, type_version, data, metadata, recorded_at, workspace_id, hash"
_COLUMN_NAMES = [c.strip() for c in _COLUMNS.split(",")]
_SQLITE_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PG_INSERT = (f"INSERT INTO events ({_COLUMNS}) SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], "
              "$4::text[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])")


DEFAULT_BUSY_TIMEOUT_MS = 60_000
"""How long an SQLite write waits for another process's lock before failing with "database is locked"."""


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


def _sqlite_pragmas(immediate: bool) -> Callable[[AsyncEngine], None]:
    def install(engine: AsyncEngine) -> None:
        busy_timeout = sqlite_busy_timeout_ms(engine.url)

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", f"busy_timeout={busy_timeout}", "synchronous=NORMAL",
                           "secure_delete=ON", "foreign_keys=ON"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(conn: Any) -> None:
            # Straight on aiosqlite's connection: one trip to its thread instead of the three or
            # four (cursor, execute, close) a statement through the adapter costs.
            driver = conn.connection.driver_connection
            statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
            try:
                await_only(driver.execute_fetchall(statement))
            except sqlite3.Error as exc:  # raised outside SQLAlchemy's own wrapping: wrap it as it would
                raise _wrapped(statement, exc) from exc

    return install


def _wrapped(statement: str, exc: sqlite3.Error) -> StatementError:
    """sqlite3's own error as the SQLAlchemy error it would have become through SQLAlchemy.

    The store talks to aiosqlite directly on its hot paths (and at BEGIN), where SQLAlchemy does not
    wrap what the driver raises. Callers tell a database that is locked past ``busy_timeout`` or
    full (``OperationalError``: retry, the write may go through later) from a bug by SQLAlchemy's
    classes; a bare ``sqlite3.OperationalError`` would be taken for a bug, and an outcome already
    sent by SMTP would not be recorded.
    """
    return DBAPIError.instance(statement, None, exc, sqlite3.Error)


async def _sqlite_driver(conn: AsyncConnection) -> Any:
    """aiosqlite's own connection under ``conn`` (same transaction): one thread trip per call.

    Through SQLAlchemy's adapter a statement costs three or four trips to aiosqlite's thread
    (cursor, execute, fetch, close), about 80 µs each, which is most of a one-event append.
    """
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def _fetch_sqlite(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> Any:
    """A SELECT straight on aiosqlite, its failures wrapped as SQLAlchemy's (see :func:`_wrapped`)."""
    try:
        return await (await _sqlite_driver(conn)).execute_fetchall(sql, params)
    except sqlite3.Error as exc:
        raise _wrapped(sql, exc) from exc


@dataclass
class EventStore:
    """The log. Create with :meth:`open`; close with :meth:`close`."""

    url: str
    vault: Vault
    now: Callable[[], datetime]
    write_engine: AsyncEngine
    read_engine: AsyncEngine
    inline: list[InlineProjector] = field(default_factory=list)
    after_commit: list[AfterCommit] = field(default_factory=list)
    # PostgreSQL: NOTIFY this channel (delivered at commit) when ``notify_when`` says new work exists,
    # so other nodes learn of it without polling the database in a loop.
    notify_channel: str | None = None
    notify_when: Callable[[Sequence[StoredEvent]], bool] | None = None

    @classmethod
    async def open(cls, url: str, vault: Vault, now: Callable[[], datetime], *, create: bool = True) -> EventStore:
        if url.startswith("sqlite"):
            sqlite_busy_timeout_ms(url)  # a bad timeout is refused before anything is opened
            # One pooled writer (SQLite has one writer anyway) and a few readers: opening a connection
            # per transaction would re-read the schema and checkpoint the WAL every time.
            # Every use of the writer ends its transaction itself (begin() commits or rolls back), so
            # the pool's extra rollback on check-in would only cost a trip to aiosqlite's thread.
            write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=300,
                                        pool_reset_on_return=None)
            read = create_async_engine(url, pool_size=4, max_overflow=4, pool_timeout=300)
            _sqlite_pragmas(True)(write)
            _sqlite_pragmas(False)(read)
        else:
            # Custom plans: a generic plan cached while the streams table was tiny would scan it whole
            # for every IN-list look-up once it has grown.
            write = create_async_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True,
                                        connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
            read = write
        store = cls(url=url, vault=vault, now=now, write_engine=write, read_engine=read)
        if create:
            async with write.begin() as conn:
                await schema.create_log_schema(conn)
        return store

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    async def close(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()

    # -- transactions --------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction holding the log's lock; appends inside it share it."""
        async with self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            pending: list[StoredEvent] = []
            conn.info["pending_events"] = pending
            yield conn
            if (pending and self.notify_channel and self.dialect == "postgresql" and self.notify_when
                    and self.notify_when(pending)):
                await conn.exec_driver_sql(f"NOTIFY {self.notify_channel}")
        if pending:
            for hook in self.after_commit:
                await hook(pending)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.connect() as conn:
            yield conn

    # -- append -------------------------------------------------------------------------------
    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        expected_version: int | None,
        *,
        workspace_id: str,
        metadata: dict[str, Any] | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[StoredEvent]:
        return await self.append_many(
            [AppendBatch(stream, events, expected_version)], workspace_id=workspace_id,
            metadata=metadata, conn=conn,
        )

    async def append_many(
        self,
        batches: Sequence[AppendBatch],
        *,
        workspace_id: str,
        metadata: dict[str, Any] | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[StoredEvent]:
        """Append to several streams atomically: all or nothing."""
        if conn is None:
            async with self.transaction() as own:
                return await self._append(own, batches, workspace_id, event_metadata(metadata))
        return await self._append(conn, batches, workspace_id, event_metadata(metadata))

    async def _append(
        self, conn: AsyncConnection, batches: Sequence[AppendBatch], workspace_id: str, metadata: dict[str, Any]
    ) -> list[StoredEvent]:
        batches = [b for b in batches if b.events]
        if not batches:
            return []
        names = [b.stream for b in batches]
        if len(set(names)) != len(names):
            raise ValueError("one stream appears twice in an append; merge its events")
        # One round trip: every stream's head and the log's last position, read under the write lock.
        heads, top = await self._heads_and_top(conn, names)
        for b in batches:
            actual = heads[b.stream][0] if b.stream in heads else 0
            if b.expected_version is not None and b.expected_version != actual:
                raise ConcurrencyError(b.stream, b.expected_version, actual)
        personal = [e for b in batches for e in b.events if e.PERSONAL]
        keys = await self._subject_keys(conn, personal, workspace_id, create=True) if personal else {}
        recorded_s = format_time(self.now())
        recorded = parse_time(recorded_s)
        meta_s = dumps(metadata)
        hasher = ChainHasher(metadata=meta_s, recorded_at=recorded_s, workspace_id=workspace_id,
                             key=self.vault.chain_key)
        rows: list[tuple[Any, ...]] = []
        stored: list[StoredEvent] = []
        position = top
        for b in batches:
            ws = b.workspace_id or workspace_id
            tail = None if ws == workspace_id else hasher.tail_for(metadata=meta_s, recorded_at=recorded_s,
                                                                   workspace_id=ws)
            version, prev = heads.get(b.stream, (0, GENESIS))
            stream_part = hasher.stream_part(b.stream)
            for ev in b.events:
                version += 1
                position += 1
                data_s = dumps(self._encrypt(ev, keys)) if ev.PERSONAL else encode_data(ev)
                prev = hasher(prev, stream_part, version, ev.TYPE, ev.VERSION, data_s, tail)
                rows.append((position, b.stream, version, ev.TYPE, ev.VERSION, data_s, meta_s, recorded_s, ws, prev))
                stored.append(StoredEvent(position, b.stream, version, ev.TYPE, ev.VERSION, ev, metadata,
                                          recorded, ws, prev))
        try:
            await self._insert_rows(conn, rows)
        except IntegrityError as exc:  # the database's own version check: another writer got there first
            raise ConcurrencyError(batches[0].stream, batches[0].expected_version, -1) from exc
        for projector in self.inline:
            await projector.apply(conn, stored)
        pending = conn.info.get("pending_events")
        if pending is not None:
            pending.extend(stored)
        return stored

    async def _insert_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """The events' rows in one statement; the triggers check versions and move the stream heads.

        SQLite: the driver's executemany with plain tuples. PostgreSQL: one ``INSERT ... SELECT
        FROM unnest(arrays)``, a single statement however many rows (and one firing of the
        statement-level heads trigger), instead of one execution per row.
        """
        if self.dialect != "postgresql":
            driver = await _sqlite_driver(conn)
            try:
                # The cursor is left to the garbage collector: closing it would be one more trip to
                # the thread for a statement that is already finished and reset.
                await driver.executemany(_SQLITE_INSERT, rows)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(_SQLITE_INSERT, None, exc) from exc
            except sqlite3.Error as exc:  # locked past busy_timeout, disk full, ...
                raise _wrapped(_SQLITE_INSERT, exc) from exc
            return
        columns = tuple(map(list, zip(*rows, strict=True)))
        await conn.exec_driver_sql(_PG_INSERT, columns)

    async def _heads_and_top(self, conn: AsyncConnection,
                             names: Sequence[str]) -> tuple[dict[str, tuple[int, str]], int]:
        """(stream -> (version, last hash)) for the streams that exist, and the last position."""
        heads: dict[str, tuple[int, str]] = {}
        top = 0
        if self.dialect == "postgresql":
            res = await conn.exec_driver_sql(
                "SELECT stream, version, last_hash FROM streams WHERE stream = ANY($1::text[]) "
                "UNION ALL SELECT NULL, COALESCE(MAX(position), 0), NULL FROM events", (list(names),))
            chunks: list[Any] = [res]
        else:
            chunks = []
            driver = await _sqlite_driver(conn)
            for i in range(0, len(names), _SQLITE_CHUNK):
                part = names[i:i + _SQLITE_CHUNK]
                marks = ",".join("?" * len(part))
                sql = f"SELECT stream, version, last_hash FROM streams WHERE stream IN ({marks})"
                if i == 0:
                    sql += " UNION ALL SELECT NULL, COALESCE(MAX(position), 0), NULL FROM events"
                try:
                    chunks.append(await driver.execute_fetchall(sql, tuple(part)))
                except sqlite3.Error as exc:
                    raise _wrapped(sql, exc) from exc
        for res in chunks:
            for stream, version, last_hash in res:
                if stream is None:
                    top = int(version)
                else:
                    heads[stream] = (int(version), last_hash)
        return heads, top

    # -- personal data ------------------------------------------------------------------------
    async def _subject_keys(
        self, conn: AsyncConnection, evs: Iterable[Event], workspace_id: str, *, create: bool
    ) -> dict[str, bytes]:
        subjects = sorted({str(getattr(e, e.SUBJECT)) for e in evs if e.PERSONAL and getattr(e, e.SUBJECT, None)})
        if not subjects:
            return {}
        t = schema.vault_keys
        keys: dict[str, bytes] = {}
        for i in range(0, len(subjects), _CHUNK):
            res = await conn.execute(select(t.c.subject_id, t.c.wrapped_key)
                                     .where(t.c.subject_id.in_(subjects[i:i + _CHUNK])))
            for sid, wrapped in res:
                keys[sid] = self.vault.unwrap(sid, wrapped)
        missing = [s for s in subjects if s not in keys]
        if create and missing:
            new = {s: Vault.new_key() for s in missing}
            await conn.execute(t.insert(), [
                {"subject_id": s, "workspace_id": workspace_id, "wrapped_key": self.vault.wrap(s, k)}
                for s, k in new.items()
            ])
            keys.update(new)
        return keys

    def _encrypt(self, ev: Event, keys: dict[str, bytes]) -> dict[str, Any]:
        data = to_data(ev)
        if ev.PERSONAL:
            key = keys.get(str(getattr(ev, ev.SUBJECT, "")))
            for name in ev.PERSONAL:
                if data.get(name) is not None:
                    if key is None:
                        raise ValueError(f"no vault key for {ev.TYPE}: personal data would be lost")
                    data[name] = Vault.encrypt_field(key, data[name])
        return data

    async def erase_subject(self, conn: AsyncConnection, subject_id: str) -> None:
        """Destroy a subject's key: its personal fields in every event become unreadable."""
        t = schema.vault_keys
        await conn.execute(t.delete().where(t.c.subject_id == subject_id))

    # -- read ---------------------------------------------------------------------------------
    async def read_stream(self, stream: str, after_version: int = 0,
                          conn: AsyncConnection | None = None) -> list[StoredEvent]:
        q = (select(schema.events).where(schema.events.c.stream == stream,
                                         schema.events.c.version > after_version)
             .order_by(schema.events.c.version))
        return await self._rows(q, conn)

    async def read_streams(self, streams: Sequence[str], conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Every event of several streams, ordered by position (one query per chunk)."""
        out: list[StoredEvent] = []
        for i in range(0, len(streams), _CHUNK):
            q = select(schema.events).where(schema.events.c.stream.in_(streams[i:i + _CHUNK]))
            out.extend(await self._rows(q, conn))
        out.sort(key=lambda e: e.position)
        return out

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
        if self.dialect == "sqlite":
            return await self._read_all_sqlite(after, limit, workspace_id, types, stream, until_position, conn)
        e = schema.events
        q = select(e).where(e.c.position > after)
        if workspace_id is not None:
            q = q.where(e.c.workspace_id == workspace_id)
        if types:
            q = q.where(e.c.type.in_(list(types)))
        if stream is not None:
            q = q.where(e.c.stream == stream)
        if until_position is not None:
            q = q.where(e.c.position <= until_position)
        return await self._rows(q.order_by(e.c.position).limit(limit), conn)

    async def _read_all_sqlite(self, after: int, limit: int, workspace_id: str | None, types: Sequence[str] | None,
                               stream: str | None, until_position: int | None,
                               conn: AsyncConnection | None) -> list[StoredEvent]:
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
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY position LIMIT ?"
        params.append(limit)
        if conn is None:
            async with self.reading() as c:
                rows = await _fetch_sqlite(c, sql, params)
                return await self._decode(c, _COLUMN_NAMES, rows)
        rows = await _fetch_sqlite(conn, sql, params)
        return await self._decode(conn, _COLUMN_NAMES, rows)

    async def last_position(self, conn: AsyncConnection | None = None) -> int:
        q = select(func.max(schema.events.c.position))
        if conn is not None:
            return int((await conn.execute(q)).scalar() or 0)
        async with self.reading() as c:
            return int((await c.execute(q)).scalar() or 0)

    async def stream_version(self, stream: str, conn: AsyncConnection | None = None) -> int:
        q = select(schema.streams.c.version).where(schema.streams.c.stream == stream)
        if conn is not None:
            return int((await conn.execute(q)).scalar() or 0)
        async with self.reading() as c:
            return int((await c.execute(q)).scalar() or 0)

    async def query(self, q: Any, conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Run a SELECT over the events table built by the caller; decode and decrypt like read_all."""
        return await self._rows(q, conn)

    async def _rows(self, q: Any, conn: AsyncConnection | None) -> list[StoredEvent]:
        if conn is None:
            async with self.reading() as c:
                res = await c.execute(q)
                return await self._decode(c, list(res.keys()), res.all())
        res = await conn.execute(q)
        return await self._decode(conn, list(res.keys()), res.all())

    async def _decode(self, conn: AsyncConnection, columns: list[str], rows: Sequence[Any]) -> list[StoredEvent]:
        """Rows of the events table (all columns, any order) to stored events, personal fields decrypted.

        One append shares one ``recorded_at`` and usually one metadata text, so both are parsed once
        per distinct value rather than once per row.
        """
        ix = {name: i for i, name in enumerate(columns)}
        i_pos, i_stream, i_ver, i_type = ix["position"], ix["stream"], ix["version"], ix["type"]
        i_tv, i_data, i_meta, i_at = ix["type_version"], ix["data"], ix["metadata"], ix["recorded_at"]
        i_ws, i_hash = ix["workspace_id"], ix["hash"]
        datas = [loads(r[i_data]) for r in rows]
        subjects: set[str] = set()
        if any(event_class(t).PERSONAL for t in {r[i_type] for r in rows}):
            for r, data in zip(rows, datas, strict=True):
                if event_class(r[i_type]).PERSONAL and any(isinstance(v, str) and v.startswith("pii:")
                                                           for v in data.values()):
                    for key in ("contact_id", "subject_id"):
                        if isinstance(data.get(key), str):
                            subjects.add(data[key])
        keys: dict[str, bytes] = {}
        if subjects:
            t = schema.vault_keys
            ordered = sorted(subjects)
            for i in range(0, len(ordered), _CHUNK):
                res = await conn.execute(select(t.c.subject_id, t.c.wrapped_key)
                                         .where(t.c.subject_id.in_(ordered[i:i + _CHUNK])))
                for sid, wrapped in res:
                    keys[sid] = self.vault.unwrap(sid, wrapped)
        times: dict[str, datetime] = {}
        metas: dict[str, dict[str, Any]] = {}
        classes: dict[str, type[Event]] = {}
        out: list[StoredEvent] = []
        new = tuple.__new__  # a StoredEvent straight from its values (its __new__ adds a Python call)
        for r, data in zip(rows, datas, strict=True):
            type_name = r[i_type]
            cls = classes.get(type_name)
            if cls is None:
                cls = classes[type_name] = event_class(type_name)
            if cls.PERSONAL:
                subject_key = keys.get(str(data.get(cls.SUBJECT, "")))
                for name in cls.PERSONAL:
                    data[name] = Vault.decrypt_field(subject_key, data.get(name))
            at_s = r[i_at]
            at = times.get(at_s)
            if at is None:
                at = times[at_s] = parse_time(at_s)
            meta_s = r[i_meta]
            meta = metas.get(meta_s)
            if meta is None:
                meta = metas[meta_s] = loads(meta_s)
            out.append(new(StoredEvent, (r[i_pos], r[i_stream], r[i_ver], type_name, r[i_tv],
                                         from_owned_data(cls, r[i_tv], data), dict(meta) if meta else {}, at,
                                         r[i_ws], r[i_hash])))
        return out

    # -- idempotency --------------------------------------------------------------------------
    # A row is written when a request claims its key, before the command runs, with status 0 and
    # an empty response (``IDEMPOTENCY_PENDING``): the (workspace, key) primary key lets exactly one
    # concurrent request win. The winner then fills in its response. The columns are the ones
    # earlier versions wrote, so old rows (always complete) read the same and nothing migrates.
    IDEMPOTENCY_PENDING = 0
    """``status_code`` of a claimed key whose first request has not answered yet (no HTTP status is 0)."""

    async def idempotent_response(self, workspace_id: str, key: str) -> tuple[str, int, str] | None:
        """(request hash, status, response JSON) stored for this key, if any.

        A claim still running reads as status :attr:`IDEMPOTENCY_PENDING` with an empty response.
        """
        t = schema.idempotency
        async with self.reading() as c:
            row = (await c.execute(select(t.c.request_hash, t.c.status_code, t.c.response)
                                   .where(t.c.workspace_id == workspace_id, t.c.key == key))).first()
        return None if row is None else (row[0], row[1], row[2])

    async def claim_idempotency_key(self, workspace_id: str, key: str, request_hash: str, *,
                                    stale_after: timedelta) -> tuple[str, int, str] | None:
        """Claim ``key`` for a request about to run; None if claimed, else the row that holds it.

        The insert is its own short transaction, committed before the command starts, so a
        concurrent request with the same key sees the claim at once and its insert fails on the
        primary key instead of running the command a second time. A pending claim older than
        ``stale_after`` belonged to a process that died mid-request (a live request releases or
        completes its claim): it is taken over, else the key would stay blocked for good.
        """
        table = schema.idempotency
        where = (table.c.workspace_id == workspace_id, table.c.key == key)
        cutoff = format_time(self.now() - stale_after)
        try:
            async with self.write_engine.begin() as conn:
                await conn.execute(table.delete().where(*where, table.c.created_at < cutoff,
                                                        table.c.status_code == self.IDEMPOTENCY_PENDING))
                await conn.execute(table.insert().values(workspace_id=workspace_id, key=key,
                                                         request_hash=request_hash, response="",
                                                         status_code=self.IDEMPOTENCY_PENDING,
                                                         created_at=format_time(self.now())))
            return None
        except IntegrityError:
            found = await self.idempotent_response(workspace_id, key)
            # Released between our insert and this read: report it pending, the caller polls again.
            return found if found is not None else (request_hash, self.IDEMPOTENCY_PENDING, "")

    async def release_idempotency_key(self, workspace_id: str, key: str, request_hash: str) -> None:
        """Drop a pending claim whose request died without a response, so a retry can run it."""
        table = schema.idempotency
        async with self.write_engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.workspace_id == workspace_id, table.c.key == key,
                                                    table.c.request_hash == request_hash,
                                                    table.c.status_code == self.IDEMPOTENCY_PENDING))

    async def save_idempotent_response(self, workspace_id: str, key: str, request_hash: str,
                                       status: int, response: str) -> None:
        """Record the first response: complete this request's pending claim, or insert the row.

        A complete row is never overwritten: the first response is the one every replay gets.
        """
        table = schema.idempotency
        where = (table.c.workspace_id == workspace_id, table.c.key == key)
        async with self.write_engine.begin() as conn:
            done = await conn.execute(table.update().where(*where, table.c.request_hash == request_hash,
                                                           table.c.status_code == self.IDEMPOTENCY_PENDING)
                                      .values(status_code=status, response=response))
            if done.rowcount:
                return
            exists = (await conn.execute(select(table.c.key).where(*where))).first()
            if exists is None:
                await conn.execute(table.insert().values(workspace_id=workspace_id, key=key,
                                                         request_hash=request_hash, status_code=status,
                                                         response=response, created_at=format_time(self.now())))
