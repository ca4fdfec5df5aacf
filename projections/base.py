"""The projection framework: read models built only from events, inline or by rebuild.

A projection is a set of tables plus handlers keyed by event type. Handlers receive runs of
consecutive events they handle, so hot paths (thousands of ``enrollment.created`` in one append)
become one set-based statement instead of one per row. Handlers use event data and event times
only, never now(), so a rebuild from position 0 gives byte-for-byte the inline read models.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    false,
    func,
    inspect,
    literal_column,
    null,
    select,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.expression import bindparam

from events import schema
from events.registry import all_types, format_time
from events.schema import SCHEMA_LOCK
from events.store import EventStore, StoredEvent

metadata = MetaData()

# Indexes a later version replaced with wider ones (rm_contacts' listing index now covers
# (workspace, erased, created_at, id)); dropped where a database made by older code still has them.
RETIRED_INDEXES = ("ix_rm_contacts_ws_created",)

projection_state = Table(
    "projection_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("position", Integer, nullable=False),
)

Handler = Callable[[AsyncConnection, Sequence[StoredEvent]], Awaitable[None]]
Progress = Callable[[str, int, int], None]


@dataclass
class Projection:
    """A named, versioned read model. Bump ``version`` when its tables or handlers change."""

    name: str
    version: int
    tables: list[Table]
    handlers: dict[str, Handler] = field(default_factory=dict)
    # True when every handler touches only rows of its own stream's entity (or rows keyed by the
    # event's position): events of different streams then commute, so a batch may be regrouped by
    # type (keeping each stream's order) into one set-based statement per type.
    stream_local: bool = False
    # With stream_local: the types whose handlers reach other streams' rows. They keep their place
    # in the log order; only the runs between them are regrouped.
    barriers: frozenset[str] = frozenset()
    # True when the tables' non-unique indexes serve readers only (no handler finds rows through
    # them): a rebuild on SQLite then drops them, loads, and builds each once at the end (one sort)
    # instead of inserting into it row by row. Unique indexes stay, so a rebuild fails as before.
    defer_indexes: bool = False

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for t in types:
                if t in self.handlers:
                    raise ValueError(f"{self.name} handles {t} twice")
                self.handlers[t] = fn
            return fn

        return register

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent],
                    types: AbstractSet[str] | None = None) -> None:
        """Call each handler once per run of consecutive events it handles.

        A run may mix the types one handler is registered for (each handler applies its events in
        order, so a run is the same as one call per event). Stream-local projections regroup the
        batch first, but only when a handler appears in more than one run: when every handler
        already has a single run (the common case), regrouping could not save a statement.
        ``types``, the set of the events' types when the caller has it, spares a pass per projection.
        """
        handlers = self.handlers
        if types is None:
            types = {ev.type for ev in events}
        mine_types = [t for t in types if t in handlers]
        if not mine_types:
            return
        mine = events if len(mine_types) == len(types) else [ev for ev in events if ev.type in handlers]
        if len({handlers[t] for t in mine_types}) == 1:  # one handler: the whole batch is one run
            await handlers[mine_types[0]](conn, mine)
            return
        runs = _runs(mine, handlers)
        if self.stream_local and len(runs) > len({h for h, _, _ in runs}):
            if self.barriers:
                regrouped: list[StoredEvent] = []
                start = 0
                for i, ev in enumerate(mine):
                    if ev.type in self.barriers:
                        regrouped.extend(_regroup(mine[start:i]))
                        regrouped.append(ev)
                        start = i + 1
                regrouped.extend(_regroup(mine[start:]))
                mine = regrouped
            else:
                mine = _regroup(mine)
            runs = _runs(mine, handlers)
        for handler, start, end in runs:
            await handler(conn, mine[start:end] if start or end < len(mine) else mine)

    async def clear(self, conn: AsyncConnection) -> None:
        for table in reversed(self.tables):
            await conn.execute(delete(table))


def _runs(events: Sequence[StoredEvent], handlers: dict[str, Handler]) -> list[tuple[Handler, int, int]]:
    """(handler, start, end) of each run of consecutive events that one handler takes."""
    runs: list[tuple[Handler, int, int]] = []
    current: Handler | None = None
    start = 0
    for i, ev in enumerate(events):
        h = handlers[ev.type]
        if h is not current:
            if current is not None:
                runs.append((current, start, i))
            current, start = h, i
    if current is not None:
        runs.append((current, start, len(events)))
    return runs


def _regroup(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """Stable order by (rank within its stream in this batch, type): [c1, s1, c2, s2] -> [c1, c2, s1, s2].

    Types rank by their first appearance. Events go into one bucket per (rank, type), in log
    order, and the buckets are concatenated in (rank, type rank) order: the same order as a stable
    sort on that key, without a key tuple per event.
    """
    if len(events) < 3:
        return list(events)
    seen: dict[str, int] = {}
    buckets: dict[tuple[int, str], list[StoredEvent]] = {}
    for ev in events:
        stream = ev.stream
        rank = seen.get(stream, 0)
        seen[stream] = rank + 1
        key = (rank, ev.type)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [ev]
        else:
            bucket.append(ev)
    if len(buckets) == 1:
        return list(events)
    type_rank: dict[str, int] = {}
    for _, type_ in buckets:  # a type's first bucket is created at its first event
        type_rank.setdefault(type_, len(type_rank))
    out: list[StoredEvent] = []
    for key in sorted(buckets, key=lambda k: (k[0], type_rank[k[1]])):
        out.extend(buckets[key])
    return out


class TimeTexts(dict[datetime, str]):
    """``format_time`` memoised for one handler call: ``texts[dt]``.

    Formatting a time is the costliest per-row step of the hot handlers, and their values repeat:
    the events of one append share one ``recorded_at``, and many emails share a due time. Equal
    datetimes are the same instant, so they format to the same text.
    """

    def __missing__(self, value: datetime) -> str:
        text = self[value] = format_time(value)
        return text


def lit(value: str | int | bool | None) -> ColumnElement[Any]:
    """A constant rendered into the SQL of a :class:`Statement` (so that rows need not bind it)."""
    if value is None:
        return null()
    if isinstance(value, bool):
        return true() if value else false()
    if isinstance(value, int):
        return literal_column(str(value))
    return literal_column("'" + value.replace("'", "''") + "'")


class Statement:
    """A statement compiled once per dialect and run with one positional tuple per row.

    Hot handlers write thousands of rows per call; ``conn.execute(stmt, [dict, ...])`` costs a dict
    per row and SQLAlchemy's per-row parameter processing, which dominated projection time. Here
    the driver's executemany receives the tuples as they are, with the dialect's placeholders
    (``?`` on SQLite, ``$n`` on asyncpg). ``params`` names the bound parameters in the order the
    compiled statement wants them (checked at compile time); constants are written with
    :func:`lit`. No type processing runs: values must be what the column stores (str, int, bool,
    None), which is also what SQLAlchemy would have bound for them.
    """

    def __init__(self, build: Callable[[], UpdateBase], params: Sequence[str], *,
                 unnest: tuple[Table, dict[str, str | int | bool | None]] | None = None) -> None:
        self._build = build
        self.params = tuple(params)
        self._sql: dict[tuple[str, str], str] = {}
        # INSERTs only (see insert_statement): on PostgreSQL, all rows in one statement.
        self._unnest = unnest

    def sql(self, dialect: Dialect) -> str:
        key = (dialect.name, dialect.paramstyle)
        text = self._sql.get(key)
        if text is None:
            compiled = self._build().compile(dialect=dialect)
            order = tuple(compiled.positiontup or ())
            if order != self.params:
                raise ValueError(f"statement binds {order}, not {self.params}: {compiled.string}")
            text = self._sql[key] = compiled.string
        return text

    def unnest_sql(self, dialect: Dialect) -> str:
        """``INSERT ... SELECT FROM unnest($1::type[], ...)``: one execution for all the rows.

        asyncpg's executemany runs the statement once per row on the server; a rebuild inserts
        hundreds of thousands of rows, and one statement per batch is several times cheaper. Only
        for INSERTs: rows inserted together or one after another give the same table (a duplicate
        key fails either way), which is not true of UPDATEs that touch one row twice.
        """
        assert self._unnest is not None
        key = ("unnest", dialect.name)
        text = self._sql.get(key)
        if text is None:
            table, constants = self._unnest
            quote = dialect.identifier_preparer.quote

            def sql_type(column: Column[Any]) -> str:
                # Strings travel as text: an explicit cast to VARCHAR(n) would silently truncate a
                # longer value, where the INSERT's own assignment to the column refuses it.
                return "TEXT" if isinstance(column.type, String) else str(column.type.compile(dialect))

            bound = [c for c in table.columns if c.name not in constants]
            arrays = ", ".join(f"${i}::{sql_type(c)}[]" for i, c in enumerate(bound, 1))
            names = ", ".join(quote(c.name) for c in bound)
            values = ", ".join(
                f"u.{quote(c.name)}" if c.name not in constants
                else f"CAST({lit(constants[c.name]).compile(dialect=dialect)} AS {sql_type(c)})"
                for c in table.columns)
            columns = ", ".join(quote(c.name) for c in table.columns)
            text = self._sql[key] = (f"INSERT INTO {quote(table.name)} ({columns}) "
                                     f"SELECT {values} FROM unnest({arrays}) AS u({names})")
        return text

    async def run(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._unnest is not None and conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(self.unnest_sql(conn.dialect), tuple(map(list, zip(*rows, strict=True))))
        elif conn.dialect.positional:
            await conn.exec_driver_sql(self.sql(conn.dialect), rows)
        else:  # a driver with named parameters: through SQLAlchemy, same values
            await conn.execute(self._build(), [dict(zip(self.params, row, strict=True)) for row in rows])


def insert_statement(table: Table, **constants: str | int | bool | None) -> Statement:
    """INSERT of every column of ``table``: ``constants`` written into the SQL, the others bound,
    in the table's column order."""
    names = [c.name for c in table.columns if c.name not in constants]
    unknown = set(constants) - {c.name for c in table.columns}
    if unknown:
        raise ValueError(f"{table.name} has no column {sorted(unknown)}")

    def build() -> UpdateBase:
        return table.insert().values({c.name: lit(constants[c.name]) if c.name in constants
                                      else bindparam(f"p_{c.name}") for c in table.columns})

    return Statement(build, [f"p_{n}" for n in names], unnest=(table, dict(constants)))


async def _covered(store: EventStore, conn: AsyncConnection | None, end: int | None) -> tuple[int, int]:
    """(number of events, last position) of the log up to ``end``."""
    ev = schema.events
    q = select(func.count(), func.coalesce(func.max(ev.c.position), 0))
    if end is not None:
        q = q.where(ev.c.position <= end)
    if conn is None:
        async with store.reading() as c:
            count, last = (await c.execute(q)).one()
    else:
        count, last = (await conn.execute(q)).one()
    return int(count), int(last)


class Projector:
    """Runs every projection inline in the append's transaction, and rebuilds them."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValueError("two projections share a name")

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        types = {ev.type for ev in events}
        for p in self.projections:
            await p.apply(conn, events, types)
        if events:
            await conn.execute(projection_state.update().values(position=events[-1].position))

    async def create_schema(self, conn: AsyncConnection) -> None:
        """The read-model tables and their indexes, also on a database made by older code."""
        await conn.run_sync(metadata.create_all)
        for p in self.projections:
            for table in p.tables:
                await conn.run_sync(table.create, checkfirst=True)
                # create_all leaves an existing table as it is: an index added since (a new read
                # path) would be missing on a database made by older code.
                for index in table.indexes:
                    await conn.run_sync(index.create, checkfirst=True)
        for name in RETIRED_INDEXES:  # replaced by a wider one: it would only slow every write
            await conn.execute(text(f"DROP INDEX IF EXISTS {name}"))

    async def stale(self, conn: AsyncConnection) -> list[Projection]:
        """Projections whose stored version differs from the code's (or that never ran)."""
        rows = dict((await conn.execute(select(projection_state.c.name, projection_state.c.version))).all())
        return [p for p in self.projections if rows.get(p.name) != p.version]

    async def rebuild(
        self,
        store: EventStore,
        *,
        only: Sequence[Projection] | None = None,
        batch_size: int = 5000,
        progress: Progress | None = None,
        until_position: int | None = None,
        target: Any = None,
        event_filter: Callable[[StoredEvent], bool] | None = None,
    ) -> int:
        """Clear and refill projections from position 0; returns the number of events read.

        Runs in one write transaction on the store (or ``target``, another engine, for replays
        into another database), so readers see the old models until the new ones are complete.
        """
        chosen = list(only) if only is not None else self.projections
        engine = target if target is not None else store.write_engine
        total = until_position if until_position is not None else await store.last_position()
        # Read only the types some chosen projection handles: the others would be decoded (and
        # decrypted) for nothing. Not with ``event_filter``: it is shown every event of the log.
        handled = {t for p in chosen for t in p.handlers}
        types = sorted(handled) if event_filter is None and not handled.issuperset(all_types()) else None
        done = 0
        async with engine.begin() as conn:
            if target is None and store.dialect == "postgresql":
                await conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            end = until_position
            if types is not None and end is None:  # the log's end, read under the write lock
                end = await store.last_position(conn if target is None else None)
            # Dropped before the clear, which then has fewer b-trees to empty. Only on SQLite: the
            # DDL is transactional there and readers keep their snapshot, where PostgreSQL would
            # lock the tables against readers for the whole rebuild.
            deferred = [ix for p in chosen if p.defer_indexes for table in p.tables for ix in table.indexes
                        if not ix.unique] if conn.dialect.name == "sqlite" else []
            for ix in deferred:
                await conn.run_sync(ix.drop, checkfirst=True)
            for p in chosen:
                await p.clear(conn)
            after = 0
            while True:
                batch = await store.read_all(after, batch_size, types=types, until_position=end)
                if not batch:
                    break
                events = [e for e in batch if event_filter(e)] if event_filter else batch
                present = {e.type for e in events}
                for p in chosen:
                    await p.apply(conn, events, present)
                after = batch[-1].position
                done += len(batch)
                if progress:
                    progress("rebuild", after, total)
            if types is not None:  # every event up to ``end`` was covered, the skipped types too
                done, last = await _covered(store, conn if target is None else None, end)
                if last > after:
                    after = last
                    if progress:
                        progress("rebuild", after, total)
            for ix in deferred:
                await conn.run_sync(ix.create)
            for p in chosen:
                await self._set_state(conn, p, after)
        return done

    async def _set_state(self, conn: AsyncConnection, p: Projection, position: int) -> None:
        t = projection_state
        await conn.execute(delete(t).where(t.c.name == p.name))
        await conn.execute(t.insert().values(name=p.name, version=p.version, position=position))

    async def start(self, store: EventStore, progress: Progress | None = None) -> list[str]:
        """Create tables; rebuild every projection whose version changed. Returns their names."""
        async with store.write_engine.begin() as conn:
            if store.dialect == "postgresql":  # nodes starting together create the tables in turn
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            await self.create_schema(conn)
            stale = await self.stale(conn)
        if stale:
            await self.rebuild(store, only=stale, progress=progress)
        return [p.name for p in stale]


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def compact_json(value: Any) -> str:
    """JSON as the read models store it: compact, keys sorted, Unicode kept.

    One encoder built once: ``json.dumps`` with these options builds a new one per call, and an
    import stores one custom-fields text per contact.
    """
    return _COMPACT_JSON(value)


def recorded_at_text(ev: StoredEvent) -> str:
    return format_time(ev.recorded_at)


def event_of(ev: StoredEvent) -> Any:
    """The domain event, typed loosely: each handler knows which event types it receives."""
    return ev.event


class ReshapingProjection(Projection):
    """A projection whose clear also brings its tables' columns up to the code's.

    Read models never migrate: a changed projection gets a new version and is rebuilt at start-up.
    But ``create_all`` leaves an existing table as it is, so a table that gained a column (here
    ``rm_api_keys.name``) would refuse the rebuild's inserts on a database made by older code.
    Its clear therefore drops and recreates each table whose columns differ, inside the rebuild's
    transaction; a table already in shape is only emptied.
    """

    async def clear(self, conn: AsyncConnection) -> None:
        for table in self.tables:
            present = await conn.run_sync(_column_names, table.name)
            if present != {col.name for col in table.columns}:
                await conn.run_sync(table.drop, checkfirst=True)
                await conn.run_sync(table.create)
        await super().clear(conn)


def _column_names(sync_conn: Any, name: str) -> set[str] | None:
    found = inspect(sync_conn)
    return {col["name"] for col in found.get_columns(name)} if found.has_table(name) else None
