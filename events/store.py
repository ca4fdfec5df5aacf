"""The append-only event store on SQLAlchemy 2 async: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Every append takes the log's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``LOCK TABLE
events IN EXCLUSIVE MODE``), assigns positions under it and applies the inline projections in the
same transaction. Positions therefore commit in order on both backends, so a reader that follows
``read_all(after=...)`` can never skip an event that committed late.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from events import schema
from events.chain import GENESIS, event_hash
from events.registry import Event, event_class, format_time, from_data, parse_time, to_data
from events.vault import Vault


class ConcurrencyError(Exception):
    """Another writer appended to the stream first: reload, decide again, retry."""

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(f"stream {stream}: expected version {expected}, found {actual}")
        self.stream, self.expected, self.actual = stream, expected, actual


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as it lives in the log, with its clear (decrypted) domain event."""

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


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _sqlite_pragmas(immediate: bool) -> Callable[[AsyncEngine], None]:
    def install(engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            for pragma in ("journal_mode=WAL", "busy_timeout=60000", "synchronous=NORMAL",
                           "secure_delete=ON", "foreign_keys=ON"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return install


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
            # One pooled writer (SQLite has one writer anyway) and a few readers: opening a connection
            # per transaction would re-read the schema and checkpoint the WAL every time.
            write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=300)
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
    def _insert_sql(self) -> str:
        marks = ", ".join(["?"] * 10) if self.dialect == "sqlite" else ", ".join(f"${i}" for i in range(1, 11))
        return ("INSERT INTO events (position, stream, version, type, type_version, data, metadata, recorded_at, "
                f"workspace_id, hash) VALUES ({marks})")

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
                return await self._append(own, batches, workspace_id, metadata or {})
        return await self._append(conn, batches, workspace_id, metadata or {})

    async def _append(
        self, conn: AsyncConnection, batches: Sequence[AppendBatch], workspace_id: str, metadata: dict[str, Any]
    ) -> list[StoredEvent]:
        batches = [b for b in batches if b.events]
        if not batches:
            return []
        names = [b.stream for b in batches]
        if len(set(names)) != len(names):
            raise ValueError("one stream appears twice in an append; merge its events")
        # A new stream (expected version 0) needs no look-up: inserting its head row fails if it exists.
        heads = await self._heads(conn, [b.stream for b in batches if b.expected_version != 0])
        for b in batches:
            actual = heads.get(b.stream, (0, GENESIS))[0]
            if b.expected_version is not None and b.expected_version != actual:
                raise ConcurrencyError(b.stream, b.expected_version, actual)
        top = (await conn.execute(select(func.max(schema.events.c.position)))).scalar() or 0
        keys = await self._subject_keys(conn, [e for b in batches for e in b.events], workspace_id, create=True)
        chain_key = self.vault.chain_key
        recorded_s = format_time(self.now())
        recorded = parse_time(recorded_s)
        meta_s = _json(metadata)
        rows: list[tuple[Any, ...]] = []
        stored: list[StoredEvent] = []
        new_heads: dict[str, tuple[int, str, str]] = {}
        position = top
        for b in batches:
            ws = b.workspace_id or workspace_id
            version, prev = heads.get(b.stream, (0, GENESIS))
            for ev in b.events:
                version += 1
                position += 1
                data_s = _json(self._encrypt(ev, keys))
                digest = event_hash(prev, stream=b.stream, version=version, type_name=ev.TYPE,
                                    type_version=ev.VERSION, data=data_s, metadata=meta_s,
                                    recorded_at=recorded_s, workspace_id=ws, key=chain_key)
                rows.append((position, b.stream, version, ev.TYPE, ev.VERSION, data_s, meta_s, recorded_s, ws,
                             digest))
                stored.append(StoredEvent(position, b.stream, version, ev.TYPE, ev.VERSION, ev, metadata,
                                          recorded, ws, digest))
                prev = digest
            new_heads[b.stream] = (version, prev, ws)
        inserts = [{"stream": s, "workspace_id": w, "version": v, "last_hash": h}
                   for s, (v, h, w) in new_heads.items() if s not in heads]
        updates = [{"s": s, "v": v, "h": h} for s, (v, h, _w) in new_heads.items() if s in heads]
        try:
            if inserts:
                await conn.execute(schema.streams.insert(), inserts)
            # The driver's executemany with plain tuples: the hot path of every append.
            await conn.exec_driver_sql(self._insert_sql, rows)
        except IntegrityError as exc:  # a stream expected to be new exists, or a concurrent writer won
            raise ConcurrencyError(batches[0].stream, batches[0].expected_version, -1) from exc
        if updates:
            t = schema.streams
            await conn.execute(
                t.update().where(t.c.stream == bindparam("s")).values(version=bindparam("v"),
                                                                      last_hash=bindparam("h")),
                updates,
            )
        for projector in self.inline:
            await projector.apply(conn, stored)
        pending = conn.info.get("pending_events")
        if pending is not None:
            pending.extend(stored)
        return stored

    async def _heads(self, conn: AsyncConnection, names: Sequence[str]) -> dict[str, tuple[int, str]]:
        t = schema.streams
        out: dict[str, tuple[int, str]] = {}
        for i in range(0, len(names), _CHUNK):
            res = await conn.execute(select(t.c.stream, t.c.version, t.c.last_hash)
                                     .where(t.c.stream.in_(names[i:i + _CHUNK])))
            for s, v, h in res:
                out[s] = (v, h)
        return out

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
                rows = (await c.execute(q)).mappings().all()
                return await self._decode(c, rows)
        rows = (await conn.execute(q)).mappings().all()
        return await self._decode(conn, rows)

    async def _decode(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[StoredEvent]:
        decoded: list[tuple[Any, dict[str, Any]]] = []
        subjects: set[str] = set()
        for r in rows:
            data = json.loads(r["data"])
            decoded.append((r, data))
            if event_class(r["type"]).PERSONAL and any(isinstance(v, str) and v.startswith("pii:")
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
        out: list[StoredEvent] = []
        for r, data in decoded:
            cls = event_class(r["type"])
            if cls.PERSONAL:
                subject_key = keys.get(str(data.get(cls.SUBJECT, "")))
                for name in cls.PERSONAL:
                    data[name] = Vault.decrypt_field(subject_key, data.get(name))
            ev = from_data(r["type"], r["type_version"], data)
            out.append(StoredEvent(r["position"], r["stream"], r["version"], r["type"], r["type_version"], ev,
                                   json.loads(r["metadata"]), parse_time(r["recorded_at"]), r["workspace_id"],
                                   r["hash"]))
        return out

    # -- idempotency --------------------------------------------------------------------------
    async def idempotent_response(self, workspace_id: str, key: str) -> tuple[str, int, str] | None:
        """(request hash, status, response JSON) stored for this key, if any."""
        t = schema.idempotency
        async with self.reading() as c:
            row = (await c.execute(select(t.c.request_hash, t.c.status_code, t.c.response)
                                   .where(t.c.workspace_id == workspace_id, t.c.key == key))).first()
        return None if row is None else (row[0], row[1], row[2])

    async def save_idempotent_response(self, workspace_id: str, key: str, request_hash: str,
                                       status: int, response: str) -> None:
        t = schema.idempotency
        async with self.write_engine.begin() as c:
            exists = (await c.execute(select(t.c.key).where(t.c.workspace_id == workspace_id,
                                                            t.c.key == key))).first()
            if exists is None:
                await c.execute(t.insert().values(workspace_id=workspace_id, key=key, request_hash=request_hash,
                                                  status_code=status, response=response,
                                                  created_at=format_time(self.now())))
