"""The projection framework: read models built only from events, inline or by rebuild.

A projection is a set of tables plus handlers keyed by event type. Handlers receive runs of
consecutive events of one type, so hot paths (thousands of ``enrollment.created`` in one append)
become one set-based statement instead of one per row. Handlers use event data and event times
only, never now(), so a rebuild from position 0 gives byte-for-byte the inline read models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.schema import SCHEMA_LOCK
from events.store import EventStore, StoredEvent

metadata = MetaData()

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

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for t in types:
                if t in self.handlers:
                    raise ValueError(f"{self.name} handles {t} twice")
                self.handlers[t] = fn
            return fn

        return register

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        mine = [ev for ev in events if ev.type in self.handlers]
        if self.stream_local and len(mine) > 2:
            regrouped: list[StoredEvent] = []
            segment: list[StoredEvent] = []
            for ev in mine:
                if ev.type in self.barriers:
                    regrouped.extend(_regroup(segment))
                    regrouped.append(ev)
                    segment = []
                else:
                    segment.append(ev)
            regrouped.extend(_regroup(segment))
            mine = regrouped
        run: list[StoredEvent] = []
        for ev in mine:
            if run and run[-1].type != ev.type:
                await self.handlers[run[0].type](conn, run)
                run = []
            run.append(ev)
        if run:
            await self.handlers[run[0].type](conn, run)

    async def clear(self, conn: AsyncConnection) -> None:
        for table in reversed(self.tables):
            await conn.execute(delete(table))


def _regroup(events: list[StoredEvent]) -> list[StoredEvent]:
    """Stable order by (rank within its stream in this batch, type): [c1, s1, c2, s2] -> [c1, c2, s1, s2]."""
    seen: dict[str, int] = {}
    type_rank: dict[str, int] = {}
    keyed = []
    for i, ev in enumerate(events):
        rank = seen.get(ev.stream, 0)
        seen[ev.stream] = rank + 1
        keyed.append((rank, type_rank.setdefault(ev.type, len(type_rank)), i, ev))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


class Projector:
    """Runs every projection inline in the append's transaction, and rebuilds them."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValueError("two projections share a name")

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        for p in self.projections:
            await p.apply(conn, events)
        if events:
            await conn.execute(projection_state.update().values(position=events[-1].position))

    async def create_schema(self, conn: AsyncConnection) -> None:
        await conn.run_sync(metadata.create_all)
        for p in self.projections:
            for table in p.tables:
                await conn.run_sync(table.create, checkfirst=True)

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
        done = 0
        async with engine.begin() as conn:
            if target is None and store.dialect == "postgresql":
                await conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            for p in chosen:
                await p.clear(conn)
            after = 0
            while True:
                batch = await store.read_all(after, batch_size, until_position=until_position)
                if not batch:
                    break
                events = [e for e in batch if event_filter(e)] if event_filter else batch
                for p in chosen:
                    await p.apply(conn, events)
                after = batch[-1].position
                done += len(batch)
                if progress:
                    progress("rebuild", after, total)
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
