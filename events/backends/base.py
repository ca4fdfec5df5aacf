"""What every backend of the event store shares, written once: append, chain, encryption, decoding.

A backend (``sqlite.py``, ``postgres.py``, ``memory.py``) subclasses :class:`SqlEventStore` and
supplies only what differs between databases: how its engines are opened, how the log's write lock
is taken, how rows are inserted and stream heads read on the hot path, what happens at commit
(PostgreSQL's ``NOTIFY``), and how a driver's own errors are translated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events import schema
from events.chain import GENESIS, ChainHasher
from events.context import event_metadata
from events.gc_pause import paused_gc
from events.registry import (
    Event,
    dumps,
    encode_data,
    encode_encrypted,
    event_class,
    format_time,
    from_owned_data,
    loads,
    parse_time,
    to_data,
)
from events.store import AfterCommit, AppendBatch, ConcurrencyError, InlineProjector, StoredEvent
from events.vault import Vault

LOOKUP_CHUNK = 400
"""Values per ``IN (...)`` list of the portable look-ups (streams, subject keys)."""
COLUMNS = "position, stream, version, type, type_version, data, metadata, recorded_at, workspace_id, hash"
"""The events table's columns in the order the append writes them and the fast reads select them."""
COLUMN_NAMES = [name.strip() for name in COLUMNS.split(",")]

StreamHeads = dict[str, tuple[int, str]]


def take_heads(rows: Iterable[Sequence[Any]], heads: StreamHeads) -> int | None:
    """Fold the rows of a heads look-up into `heads`: ``(stream, version, last_hash)`` per existing
    stream, and one row ``(NULL, last position, NULL)`` whose position is returned (None without it).

    Both backends ask for the heads and the log's last position in one round trip, in this shape.
    """
    top: int | None = None
    for stream, version, last_hash in rows:
        if stream is None:
            top = int(version)
        else:
            heads[stream] = (int(version), last_hash)
    return top
"""stream -> (its version, the hash of its last event), for the streams that exist."""


@dataclass
class SqlEventStore(ABC):
    """The log on a SQL database. Create with a backend's ``open``; close with :meth:`close`."""

    url: str
    vault: Vault
    now: Callable[[], datetime]
    write_engine: AsyncEngine
    read_engine: AsyncEngine
    inline: list[InlineProjector] = field(default_factory=list)
    after_commit: list[AfterCommit] = field(default_factory=list)
    # PostgreSQL: NOTIFY this channel (delivered at commit) when ``notify_when`` says new work exists,
    # so other nodes learn of it without polling the database in a loop. Other backends ignore it.
    notify_channel: str | None = None
    notify_when: Callable[[Sequence[StoredEvent]], bool] | None = None

    @classmethod
    async def _opened(cls, url: str, vault: Vault, now: Callable[[], datetime], write: AsyncEngine,
                      read: AsyncEngine, *, create: bool) -> Any:
        """The store on engines a backend's ``open`` made, with the log's schema created if asked."""
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

    # -- what a backend supplies ---------------------------------------------------------------
    @abstractmethod
    async def _lock_log(self, conn: AsyncConnection) -> None:
        """Take the log's write lock at the start of a write transaction (if BEGIN did not)."""

    @abstractmethod
    async def _before_commit(self, conn: AsyncConnection, pending: Sequence[StoredEvent]) -> None:
        """Last statements of a write transaction that appended ``pending`` (PostgreSQL: NOTIFY)."""

    @abstractmethod
    async def _insert_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """The events' rows (in :data:`COLUMNS` order) in as few statements as the driver allows.

        The database's triggers check each stream's versions and move the stream heads; a version
        clash must surface as SQLAlchemy's :class:`IntegrityError`.
        """

    @abstractmethod
    async def _heads_and_top(self, conn: AsyncConnection, names: Sequence[str]) -> tuple[StreamHeads, int]:
        """The heads of the named streams that exist, and the log's last position: one round trip."""

    # -- transactions --------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction holding the log's lock; appends inside it share it."""
        async with self.write_engine.begin() as conn:
            await self._lock_log(conn)
            pending: list[StoredEvent] = []
            conn.info["pending_events"] = pending
            yield conn
            if pending:
                await self._before_commit(conn, pending)
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
        batches = [batch for batch in batches if batch.events]
        if not batches:
            return []
        names = [batch.stream for batch in batches]
        if len(set(names)) != len(names):
            raise ValueError("one stream appears twice in an append; merge its events")
        # One round trip: every stream's head and the log's last position, read under the write lock.
        heads, top = await self._heads_and_top(conn, names)
        for batch in batches:
            actual = heads[batch.stream][0] if batch.stream in heads else 0
            if batch.expected_version is not None and batch.expected_version != actual:
                raise ConcurrencyError(batch.stream, batch.expected_version, actual)
        personal = [ev for batch in batches for ev in batch.events if ev.PERSONAL]
        keys = await self._subject_keys(conn, personal, workspace_id, create=True) if personal else {}
        rows, stored = self._encoded(batches, heads, top, keys, workspace_id, metadata)
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

    def _encoded(self, batches: Sequence[AppendBatch], heads: StreamHeads, top: int, keys: dict[str, bytes],
                 workspace_id: str, metadata: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[StoredEvent]]:
        """The events' rows (in :data:`COLUMNS` order) and stored events: positions, versions, encrypted
        payloads and the hash chain. One synchronous pass with the cyclic collector paused (see
        :func:`~events.gc_pause.paused_gc`): an import's append builds tens of thousands of objects."""
        with paused_gc():
            recorded_s = format_time(self.now())
            recorded = parse_time(recorded_s)
            meta_s = dumps(metadata)
            hasher = ChainHasher(metadata=meta_s, recorded_at=recorded_s, workspace_id=workspace_id,
                                 key=self.vault.chain_key)
            rows: list[tuple[Any, ...]] = []
            stored: list[StoredEvent] = []
            position = top
            for batch in batches:
                ws = batch.workspace_id or workspace_id
                tail = None if ws == workspace_id else hasher.tail_for(metadata=meta_s, recorded_at=recorded_s,
                                                                       workspace_id=ws)
                version, prev = heads.get(batch.stream, (0, GENESIS))
                stream_part = hasher.stream_part(batch.stream)
                for ev in batch.events:
                    version += 1
                    position += 1
                    data_s = encode_encrypted(type(ev), self._encrypt(ev, keys)) if ev.PERSONAL else encode_data(ev)
                    prev = hasher(prev, stream_part, version, ev.TYPE, ev.VERSION, data_s, tail)
                    rows.append((position, batch.stream, version, ev.TYPE, ev.VERSION, data_s, meta_s, recorded_s, ws,
                                 prev))
                    stored.append(StoredEvent(position, batch.stream, version, ev.TYPE, ev.VERSION, ev, metadata,
                                              recorded, ws, prev))
        return rows, stored

    # -- personal data ------------------------------------------------------------------------
    async def _subject_keys(
        self, conn: AsyncConnection, evs: Iterable[Event], workspace_id: str, *, create: bool
    ) -> dict[str, bytes]:
        subjects = sorted({str(getattr(ev, ev.SUBJECT)) for ev in evs if ev.PERSONAL and getattr(ev, ev.SUBJECT, None)})
        if not subjects:
            return {}
        keys = await self._unwrapped_keys(conn, subjects)
        missing = [subject for subject in subjects if subject not in keys]
        if create and missing:
            new = {subject: Vault.new_key() for subject in missing}
            await self._insert_keys(conn, [(subject, workspace_id, wrapped)
                                           for subject, wrapped in self.vault.wrap_many(new)])
            keys.update(new)
        return keys

    async def _unwrapped_keys(self, conn: AsyncConnection, subjects: Sequence[str]) -> dict[str, bytes]:
        """The data keys of the subjects that still have one (an erased subject has none)."""
        unwrap = self.vault.unwrap
        found = await self._wrapped_keys(conn, subjects)
        return {subject_id: unwrap(subject_id, wrapped) for subject_id, wrapped in found}

    async def _wrapped_keys(self, conn: AsyncConnection, subjects: Sequence[str]) -> list[tuple[str, bytes]]:
        """(subject, wrapped key) of the ``subjects`` that have a key row: portable, one query per chunk.

        A backend may answer in fewer round trips (its driver's own parameter style and limits).
        """
        table = schema.vault_keys
        found: list[tuple[str, bytes]] = []
        for start in range(0, len(subjects), LOOKUP_CHUNK):
            res = await conn.execute(select(table.c.subject_id, table.c.wrapped_key)
                                     .where(table.c.subject_id.in_(subjects[start:start + LOOKUP_CHUNK])))
            found.extend((subject_id, wrapped) for subject_id, wrapped in res)
        return found

    async def _insert_keys(self, conn: AsyncConnection, rows: list[tuple[str, str, bytes]]) -> None:
        """New key rows (subject, workspace, wrapped key): portable, through SQLAlchemy's executemany.

        A backend may hand the tuples to its driver as they are (an import writes one per contact).
        """
        await conn.execute(schema.vault_keys.insert(), [
            {"subject_id": subject, "workspace_id": workspace, "wrapped_key": wrapped}
            for subject, workspace, wrapped in rows
        ])

    def _encrypt(self, ev: Event, keys: dict[str, bytes]) -> dict[str, Any]:
        data = to_data(ev)
        if ev.PERSONAL:
            key = keys.get(str(getattr(ev, ev.SUBJECT, "")))
            if key is None:
                if any(data.get(name) is not None for name in ev.PERSONAL):
                    raise ValueError(f"no vault key for {ev.TYPE}: personal data would be lost")
            else:
                Vault.encrypt_fields(key, data, ev.PERSONAL)
        return data

    async def erase_subject(self, conn: AsyncConnection, subject_id: str) -> None:
        """Destroy a subject's key: its personal fields in every event become unreadable."""
        table = schema.vault_keys
        await conn.execute(table.delete().where(table.c.subject_id == subject_id))

    # -- read ---------------------------------------------------------------------------------
    async def read_stream(self, stream: str, after_version: int = 0,
                          conn: AsyncConnection | None = None) -> list[StoredEvent]:
        events = schema.events
        q = (select(events).where(events.c.stream == stream, events.c.version > after_version)
             .order_by(events.c.version))
        return await self._rows(q, conn)

    async def read_streams(self, streams: Sequence[str], conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Every event of several streams, ordered by position (one query per chunk)."""
        out: list[StoredEvent] = []
        for start in range(0, len(streams), LOOKUP_CHUNK):
            q = select(schema.events).where(schema.events.c.stream.in_(streams[start:start + LOOKUP_CHUNK]))
            out.extend(await self._rows(q, conn))
        out.sort(key=lambda stored: stored.position)
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
        events = schema.events
        q = select(events).where(events.c.position > after)
        if workspace_id is not None:
            q = q.where(events.c.workspace_id == workspace_id)
        if types:
            q = q.where(events.c.type.in_(list(types)))
        if stream is not None:
            q = q.where(events.c.stream == stream)
        if until_position is not None:
            q = q.where(events.c.position <= until_position)
        return await self._rows(q.order_by(events.c.position).limit(limit), conn)

    async def last_position(self, conn: AsyncConnection | None = None) -> int:
        q = select(func.max(schema.events.c.position))
        if conn is not None:
            return int((await conn.execute(q)).scalar() or 0)
        async with self.reading() as own:
            return int((await own.execute(q)).scalar() or 0)

    async def stream_version(self, stream: str, conn: AsyncConnection | None = None) -> int:
        q = select(schema.streams.c.version).where(schema.streams.c.stream == stream)
        if conn is not None:
            return int((await conn.execute(q)).scalar() or 0)
        async with self.reading() as own:
            return int((await own.execute(q)).scalar() or 0)

    async def query(self, q: Any, conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Run a SELECT over the events table built by the caller; decode and decrypt like read_all."""
        return await self._rows(q, conn)

    async def _rows(self, q: Any, conn: AsyncConnection | None) -> list[StoredEvent]:
        if conn is None:
            async with self.reading() as own:
                res = await own.execute(q)
                return await self._decode(own, list(res.keys()), res.all())
        res = await conn.execute(q)
        return await self._decode(conn, list(res.keys()), res.all())

    async def _decode(self, conn: AsyncConnection, columns: list[str], rows: Sequence[Any]) -> list[StoredEvent]:
        """Rows of the events table (all columns, any order) to stored events, personal fields decrypted.

        One append shares one ``recorded_at`` and usually one metadata text, so both are parsed once
        per distinct value rather than once per row.
        """
        index = {name: number for number, name in enumerate(columns)}
        i_pos, i_stream, i_ver, i_type = index["position"], index["stream"], index["version"], index["type"]
        i_tv, i_data, i_meta, i_at = index["type_version"], index["data"], index["metadata"], index["recorded_at"]
        i_ws, i_hash = index["workspace_id"], index["hash"]
        datas = [loads(row[i_data]) for row in rows]
        subjects: set[str] = set()
        if any(event_class(type_name).PERSONAL for type_name in {row[i_type] for row in rows}):
            for row, data in zip(rows, datas, strict=True):
                if event_class(row[i_type]).PERSONAL and any(isinstance(value, str) and value.startswith("pii:")
                                                             for value in data.values()):
                    for key in ("contact_id", "subject_id"):
                        if isinstance(data.get(key), str):
                            subjects.add(data[key])
        keys = await self._unwrapped_keys(conn, sorted(subjects)) if subjects else {}
        times: dict[str, datetime] = {}
        metas: dict[str, dict[str, Any]] = {}
        classes: dict[str, type[Event]] = {}
        out: list[StoredEvent] = []
        new = tuple.__new__  # a StoredEvent straight from its values (its __new__ adds a Python call)
        for row, data in zip(rows, datas, strict=True):
            type_name = row[i_type]
            cls = classes.get(type_name)
            if cls is None:
                cls = classes[type_name] = event_class(type_name)
            if cls.PERSONAL:
                subject_key = keys.get(str(data.get(cls.SUBJECT, "")))
                for name in cls.PERSONAL:
                    data[name] = Vault.decrypt_field(subject_key, data.get(name))
            at_s = row[i_at]
            at = times.get(at_s)
            if at is None:
                at = times[at_s] = parse_time(at_s)
            meta_s = row[i_meta]
            meta = metas.get(meta_s)
            if meta is None:
                meta = metas[meta_s] = loads(meta_s)
            out.append(new(StoredEvent, (row[i_pos], row[i_stream], row[i_ver], type_name, row[i_tv],
                                         from_owned_data(cls, row[i_tv], data), dict(meta) if meta else {}, at,
                                         row[i_ws], row[i_hash])))
        return out

