#!/usr/bin/env python
"""Benchmark of the event store (a benchmark that prints its figures, not a test).

Measures, on SQLite (a file in a temporary folder) and on PostgreSQL (a throwaway database):

1. batched append: ``--batch`` events (1,000) per transaction through ``append_many``, with the
   mix the engine writes (``list.created`` on new streams, ``enrollment.created`` +
   ``email.scheduled`` step 1 on new enrollment streams, ``email.scheduled`` step 2 on enrollment
   streams of earlier batches), every batch with exact expected versions;
2. one event per transaction (``append``), on ``--single`` events (5,000);
3. ``read_all`` streaming the whole log in pages of ``--page`` (5,000), decoded to events;
4. ``Projector.rebuild`` from position 0: the management projections (the read models of the
   foundation, which the target is about), then every projection the engine runs (``+ send_queue``);
5. the same appends and read on the ``eventsourcing`` library (its SQLite and PostgreSQL
   application recorders, events serialised by its ``Mapper`` + ``JSONTranscoder``).

The appends run WITHOUT inline projections (``store.inline`` empty): that is the raw cost of the
log. The cost with them is printed as an extra, informational row.

Usage::

    .venv/bin/python scripts/bench_store.py                 # 200,000 events
    .venv/bin/python scripts/bench_store.py --events 20000  # a quick trial

Needs the PostgreSQL server of ``--pg`` (default postgres@127.0.0.1:5432, trust auth) for the
PostgreSQL part (``--no-pg`` skips it). The eventsourcing part needs
``.venv/bin/pip install eventsourcing 'psycopg[binary,pool]'``; without it that part is skipped.
Every database it creates (temporary SQLite files, ``ce_bench_*`` PostgreSQL databases) is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.metadata
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy
from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.service.base import new_id  # noqa: E402
from events import catalog as _catalog  # noqa: E402,F401  (registers every event type)
from events.catalog.contact import ListCreated  # noqa: E402
from events.catalog.email import EmailScheduled  # noqa: E402
from events.catalog.enrollment import EnrollmentCreated  # noqa: E402
from events.registry import Event  # noqa: E402
from events.store import AppendBatch, EventStore  # noqa: E402
from events.vault import Vault  # noqa: E402
from projections.base import Projector  # noqa: E402
from projections.read_models import MANAGEMENT as ALL  # noqa: E402
from projections.sending import send_queue  # noqa: E402

try:
    from eventsourcing.domain import DomainEvent
    from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnectionPool, SQLiteDatastore

    HAVE_ES = True
except ImportError:  # the comparison is optional
    HAVE_ES = False

HAVE_ES_PG = False
if HAVE_ES:
    try:
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        HAVE_ES_PG = True
    except ImportError:  # psycopg 3 (with psycopg_pool) missing
        pass

INSTALL_HINT = ".venv/bin/pip install eventsourcing 'psycopg[binary,pool]'"
WS = "ws_bench"
TARGET_APPEND_SQLITE = 50_000
TARGET_REBUILD_SQLITE = 100_000
TARGET_RATIO = 5.0

out = Console(width=132)
log = Console(stderr=True, width=132)


# -- the workload -------------------------------------------------------------------------------
Item = tuple[str, list[Event], int]  # stream, events, expected version


@dataclass
class Workload:
    batches: list[list[Item]]
    singles: list[Item]
    types: dict[str, int] = field(default_factory=dict)

    @property
    def batched_events(self) -> int:
        return sum(len(evs) for b in self.batches for _, evs, _ in b)


def build_workload(n_events: int, batch_size: int, n_single: int) -> Workload:
    """Batches of ~``batch_size`` events the way the engine writes them, then single events."""
    minted = now_utc()
    campaigns = [new_id("cmp", minted) for _ in range(20)]
    base = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    pending: list[tuple[str, str, str, int]] = []  # enrollments holding step 1 only
    taken = 0
    seq = 0
    lists = 0

    def hexid(prefix: str) -> str:
        return new_id(prefix, minted)  # the engine's own ids, as its streams are named

    def new_list() -> Item:
        nonlocal lists
        lists += 1
        lid = hexid("lst")
        return f"list-{lid}", [ListCreated(list_id=lid, name=f"Prospects {lists}")], 0

    def step(enr: tuple[str, str, str, int], n: int) -> EmailScheduled:
        eid, cid, contact, s = enr
        return EmailScheduled(enrollment_id=eid, campaign_id=cid, contact_id=contact, email_id=f"{eid}.{n}",
                              step=n, due_at=base + timedelta(days=3 * (n - 1), minutes=s % 600),
                              sender_id=None if n == 1 else "snd_0001", priority=0, seq=s)

    batches: list[list[Item]] = []
    produced = 0
    while produced < n_events:
        size = min(batch_size, n_events - produced)
        batch: list[Item] = []
        count = 0
        for _ in range(max(1, size // 100)):
            batch.append(new_list())
            count += 1
        k = min(len(pending) - taken, (size - count) // 3)
        for enr in pending[taken:taken + k]:
            batch.append((f"enrollment-{enr[0]}", [step(enr, 2)], 2))
        taken += k
        count += k
        while size - count >= 2:
            seq += 1
            enr = (hexid("enr"), campaigns[seq % len(campaigns)], hexid("cnt"), seq)
            pending.append(enr)
            created = EnrollmentCreated(enrollment_id=enr[0], campaign_id=enr[1], contact_id=enr[2],
                                        batch_number=None, priority=0, seq=seq)
            batch.append((f"enrollment-{enr[0]}", [created, step(enr, 1)], 0))
            count += 2
        if size - count == 1:
            batch.append(new_list())
            count += 1
        batches.append(batch)
        produced += count
    singles: list[Item] = []
    for i in range(n_single):
        if i % 2 == 0 and taken < len(pending):
            enr = pending[taken]
            taken += 1
            singles.append((f"enrollment-{enr[0]}", [step(enr, 2)], 2))
        else:
            singles.append(new_list())
    w = Workload(batches, singles)
    for b in [*batches, singles]:
        for _, evs, _ in b:
            for ev in evs:
                w.types[ev.TYPE] = w.types.get(ev.TYPE, 0) + 1
    return w


# -- results ------------------------------------------------------------------------------------
@dataclass
class Result:
    what: str
    backend: str
    impl: str
    events: int
    seconds: float
    cpu: float  # CPU seconds of this process (every thread), the database server's excluded

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@contextmanager
def timed() -> Iterator[list[float]]:
    """Yields a list that receives [wall seconds, process CPU seconds] when the block ends."""
    box: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    yield box
    box.extend((time.perf_counter() - start, time.process_time() - cpu))


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- our store ----------------------------------------------------------------------------------
async def bench_ours(url: str, backend: str, w: Workload, page: int, results: list[Result]) -> None:
    store = await EventStore.open(url, Vault(secrets.token_bytes(32)), now_utc)
    try:
        assert not store.inline, "the raw append is measured without inline projections"
        log.print(f"[{backend}] ours: batched append of {w.batched_events:,} events ...")
        with timed() as t:
            for batch in w.batches:
                await store.append_many([AppendBatch(s, evs, v) for s, evs, v in batch], workspace_id=WS)
        results.append(Result("append 1,000 ev/tx", backend, "ours", w.batched_events, *t))

        log.print(f"[{backend}] ours: {len(w.singles):,} appends of one event ...")
        with timed() as t:
            for s, evs, v in w.singles:
                await store.append(s, evs, v, workspace_id=WS)
        results.append(Result("append 1 ev/tx", backend, "ours", len(w.singles), *t))

        total = await store.last_position()
        log.print(f"[{backend}] ours: read_all of {total:,} events ...")
        with timed() as t:
            after, n = 0, 0
            while got := await store.read_all(after, page):
                after = got[-1].position
                n += len(got)
        assert n == total, (n, total)
        results.append(Result(f"read_all {page:,}/page", backend, "ours", n, *t))

        for label, projections in (("rebuild management", ALL), ("rebuild all (+send_queue)", [*ALL, send_queue])):
            projector = Projector(projections)
            async with store.write_engine.begin() as conn:
                await projector.create_schema(conn)
            log.print(f"[{backend}] ours: {label} of {total:,} events ...")
            with timed() as t:
                done = await projector.rebuild(store, batch_size=page)
            assert done == total, (done, total)
            results.append(Result(label, backend, "ours", done, *t))
    finally:
        await store.close()
    if backend == "SQLite":
        results.append(sqlite_ceiling(url.removeprefix("sqlite+aiosqlite:///"), w.batched_events))


def sqlite_ceiling(path: str, n: int) -> Result:
    """The same first ``n`` rows inserted by raw ``sqlite3`` into a fresh copy of our schema
    (triggers included), 1,000 per transaction, with no Python work besides the driver's: what
    SQLite itself does with these rows, an upper bound for any append over this schema."""
    src = sqlite3.connect(path)
    rows = src.execute("SELECT position, stream, version, type, type_version, data, metadata, recorded_at, "
                       "workspace_id, hash FROM events WHERE position <= ? ORDER BY position", (n,)).fetchall()
    schema_sql = [sql for (sql,) in src.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ('events', 'streams') "
        "ORDER BY type = 'trigger', type = 'index'")]
    src.close()
    copy = path + ".ceiling"
    dst = sqlite3.connect(copy, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            dst.execute(f"PRAGMA {pragma}")
        for sql in schema_sql:
            dst.execute(sql)
        log.print(f"[SQLite] raw sqlite3: insert of the same {len(rows):,} rows ...")
        with timed() as t:
            for i in range(0, len(rows), 1000):
                dst.execute("BEGIN IMMEDIATE")
                dst.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows[i:i + 1000])
                dst.execute("COMMIT")
    finally:
        dst.close()
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.remove(copy + suffix)
    return Result("raw insert, same rows", "SQLite", "sqlite3 (ceiling)", len(rows), *t)


async def bench_inline(url: str, backend: str, w: Workload, limit: int, results: list[Result]) -> None:
    """Informational: the batched append with the management projections applied inline."""
    store = await EventStore.open(url, Vault(secrets.token_bytes(32)), now_utc)
    try:
        projector = Projector(ALL)
        await projector.start(store)  # creates the tables and the projection_state rows
        store.inline.append(projector)
        chosen: list[list[Item]] = []
        n = 0
        for batch in w.batches:
            if n >= limit:
                break
            chosen.append(batch)
            n += sum(len(evs) for _, evs, _ in batch)
        log.print(f"[{backend}] ours: batched append of {n:,} events WITH inline projections ...")
        with timed() as t:
            for batch in chosen:
                await store.append_many([AppendBatch(s, evs, v) for s, evs, v in batch], workspace_id=WS)
        results.append(Result("append 1,000/tx +inline", backend, "ours", n, *t))
    finally:
        await store.close()


# -- the eventsourcing library --------------------------------------------------------------------
if HAVE_ES:

    class ESListCreated(DomainEvent):
        list_id: str
        name: str

    class ESEnrollmentCreated(DomainEvent):
        enrollment_id: str
        campaign_id: str
        contact_id: str
        batch_number: int | None
        priority: int
        seq: int

    class ESEmailScheduled(DomainEvent):
        enrollment_id: str
        campaign_id: str
        contact_id: str
        email_id: str
        step: int
        due_at: datetime
        sender_id: str | None
        priority: int
        seq: int

    _ES_CLASSES: dict[str, Any] = {
        "list.created": ESListCreated,
        "enrollment.created": ESEnrollmentCreated,
        "email.scheduled": ESEmailScheduled,
    }

    class _SyncNormalPool(SQLiteConnectionPool):
        """Same durability as our store: WAL (the library's default) with synchronous=NORMAL."""

        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            conn._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
            return conn

    def es_mapper() -> Mapper:
        transcoder = JSONTranscoder()
        transcoder.register(UUIDAsHex())
        transcoder.register(DatetimeAsISO())
        return Mapper(transcoder=transcoder)

    def es_uuid(stream: str) -> uuid.UUID:
        """The stream's id as a UUID that sorts like it (one hex digit per stream kind, then the id's
        28 time-ordered hex digits): the library's (originator_id, version) key gets the same index
        locality as our (stream, version), so neither side is favoured by the ids."""
        kind, _, ident = stream.partition("-")
        digits = ident.partition("_")[2]
        return uuid.UUID(hex=f"{KINDS.index(kind):x}{digits}{'0' * (31 - len(digits))}")

    KINDS = ["list", "enrollment"]

    def es_events(items: Sequence[Item]) -> list[Any]:
        """The library's domain events for our items: one aggregate (UUID) per stream."""
        stamp = now_utc()
        evs: list[Any] = []
        for stream, events, expected in items:
            oid = es_uuid(stream)
            for i, ev in enumerate(events):
                data = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}
                evs.append(_ES_CLASSES[ev.TYPE](originator_id=oid, originator_version=expected + i + 1,
                                                timestamp=stamp, **data))
        return evs

    def bench_es(recorder: Any, backend: str, w: Workload, page: int, results: list[Result]) -> None:
        mapper = es_mapper()
        batches = [es_events(b) for b in w.batches]
        singles = [es_events([s]) for s in w.singles]
        n_batched = sum(len(b) for b in batches)
        log.print(f"[{backend}] eventsourcing: batched append of {n_batched:,} events ...")
        with timed() as t:
            for b in batches:
                recorder.insert_events([mapper.to_stored_event(e) for e in b])
        results.append(Result("append 1,000 ev/tx", backend, "eventsourcing", n_batched, *t))

        log.print(f"[{backend}] eventsourcing: {len(singles):,} appends of one event ...")
        with timed() as t:
            for b in singles:
                recorder.insert_events([mapper.to_stored_event(e) for e in b])
        results.append(Result("append 1 ev/tx", backend, "eventsourcing", len(singles), *t))

        total = n_batched + len(singles)
        log.print(f"[{backend}] eventsourcing: select_notifications of {total:,} events ...")
        with timed() as t:
            after, n = 0, 0
            while batch := recorder.select_notifications(after, page, inclusive_of_start=False):
                for note in batch:
                    mapper.to_domain_event(note)
                after = batch[-1].id
                n += len(batch)
        assert n == total, (n, total)
        results.append(Result(f"read_all {page:,}/page", backend, "eventsourcing", n, *t))

    def es_sqlite(path: str) -> tuple[Any, Callable[[], None]]:
        datastore = SQLiteDatastore(path)
        datastore.pool.close()
        datastore.pool = _SyncNormalPool(db_name=path)
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        return recorder, datastore.close

    def es_postgres(dbname: str, host: str, port: int, user: str, password: str) -> tuple[Any, Callable[[], None]]:
        datastore = PostgresDatastore(dbname, host, port, user, password)
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
        return recorder, datastore.close


# -- PostgreSQL throwaway databases -------------------------------------------------------------
@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, spec: str) -> PgServer:
        """``user[:password]@host:port``."""
        cred, _, hostport = spec.rpartition("@")
        user, _, password = (cred or "postgres").partition(":")
        host, _, port = hostport.partition(":")
        return cls(host or "127.0.0.1", int(port or 5432), user, password)

    def dsn(self, db: str) -> str:
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{db}"

    def sqlalchemy_url(self, db: str) -> str:
        return self.dsn(db).replace("postgresql://", "postgresql+asyncpg://", 1)

    async def admin(self, sql: str) -> Any:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def create(self) -> str:
        name = f"ce_bench_{secrets.token_hex(5)}"
        await self.admin(f'CREATE DATABASE "{name}"')
        return name

    async def drop(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the report ---------------------------------------------------------------------------------
def fmt_rate(r: float) -> str:
    return f"{r:,.0f}"


def report(results: list[Result], args: argparse.Namespace, w: Workload, notes: list[str]) -> None:
    def get(what_prefix: str, backend: str, impl: str) -> Result | None:
        for r in results:
            if r.what.startswith(what_prefix) and r.backend == backend and r.impl == impl:
                return r
        return None

    table = Table(title=f"Event store benchmark: {args.events:,} events batched + {args.single:,} single",
                  show_lines=False)
    for col, just in (("measure", "left"), ("backend", "left"), ("implementation", "left"),
                      ("events", "right"), ("seconds", "right"), ("events/s", "right"), ("client CPU s", "right"),
                      ("target", "left"), ("status", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        target, status = "", ""
        if r.impl == "ours" and r.backend == "SQLite" and r.what.startswith("append 1,000 ev"):
            target = f">= {TARGET_APPEND_SQLITE:,}/s"
            status = "[green]MET[/]" if r.rate >= TARGET_APPEND_SQLITE else "[red]MISSED[/]"
        elif r.impl == "ours" and r.backend == "SQLite" and r.what.startswith("rebuild management"):
            target = f">= {TARGET_REBUILD_SQLITE:,}/s"
            status = "[green]MET[/]" if r.rate >= TARGET_REBUILD_SQLITE else "[red]MISSED[/]"
        table.add_row(r.what, r.backend, r.impl, f"{r.events:,}", f"{r.seconds:.2f}", fmt_rate(r.rate),
                      f"{r.cpu:.2f}", target, status)
    out.print(table)

    if any(r.impl == "eventsourcing" for r in results):
        ratios = Table(title="ours / eventsourcing (events/s ratio)")
        for col in ("measure", "backend", "ours", "eventsourcing", "ratio", "target", "status"):
            ratios.add_column(col, justify="left" if col in ("measure", "backend", "target", "status") else "right")
        for what in ("append 1,000 ev", "append 1 ev", "read_all"):
            for backend in ("SQLite", "PostgreSQL"):
                a, b = get(what, backend, "ours"), get(what, backend, "eventsourcing")
                if a is None or b is None:
                    continue
                ratio = a.rate / b.rate if b.rate else float("inf")
                target = status = ""
                if what.startswith("append 1,000"):
                    target = f">= {TARGET_RATIO:.0f}x"
                    status = "[green]MET[/]" if ratio >= TARGET_RATIO else "[red]MISSED[/]"
                ratios.add_row(a.what, backend, fmt_rate(a.rate), fmt_rate(b.rate), f"{ratio:.2f}x", target, status)
        out.print(ratios)

    ceiling = get("raw insert", "SQLite", "sqlite3 (ceiling)")
    es_sqlite = get("append 1,000 ev", "SQLite", "eventsourcing")
    if ceiling is not None and es_sqlite is not None:
        wanted = TARGET_RATIO * es_sqlite.rate
        out.print(f"{TARGET_RATIO:.0f}x eventsourcing's batched SQLite append would be {fmt_rate(wanted)} events/s; "
                  f"raw sqlite3 inserts the same rows into our schema at {fmt_rate(ceiling.rate)} events/s "
                  f"with no Python work at all ({wanted / ceiling.rate:.1f}x that ceiling).")
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(w.types.items()))
    streams = len({s for b in [*w.batches, w.singles] for s, _, _ in b})
    out.print(f"Workload: {mix}; {streams:,} streams; {len(w.batches):,} batched transactions.")
    for note in notes:
        out.print(escape(note))


# -- main ---------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    notes: list[str] = []
    load_start = os.getloadavg()[0]
    log.print(f"building the workload ({args.events:,} + {args.single:,} events) ...")
    w = build_workload(args.events, args.batch, args.single)
    # The workload (hundreds of thousands of event objects) is the harness's, not the store's: kept
    # out of the collector's full passes, which would otherwise scan it again and again and be
    # charged to whatever runs at that moment (a real engine holds no such heap).
    gc.collect()
    gc.freeze()
    pg = PgServer.parse(args.pg)
    pg_version = ""
    if not args.no_pg:
        try:
            pg_version = str(await pg.admin("SHOW server_version"))
        except (OSError, asyncpg.PostgresError) as exc:
            notes.append(f"PostgreSQL skipped: cannot reach {pg.dsn('postgres')} ({exc}).")
            args.no_pg = True

    with tempfile.TemporaryDirectory(prefix="ce_bench_") as tmp:
        # ours, SQLite
        await bench_ours(f"sqlite+aiosqlite:///{tmp}/ours.db", "SQLite", w, args.page, results)
        if args.inline:
            await bench_inline(f"sqlite+aiosqlite:///{tmp}/inline.db", "SQLite", w, args.inline, results)
        # ours, PostgreSQL
        if not args.no_pg:
            db = await pg.create()
            try:
                await bench_ours(pg.sqlalchemy_url(db), "PostgreSQL", w, args.page, results)
            finally:
                await pg.drop(db)
            if args.inline:
                db = await pg.create()
                try:
                    await bench_inline(pg.sqlalchemy_url(db), "PostgreSQL", w, args.inline, results)
                finally:
                    await pg.drop(db)
        # eventsourcing
        if args.no_es:
            notes.append("eventsourcing comparison skipped (--no-es).")
        elif not HAVE_ES:
            notes.append(f"eventsourcing comparison skipped: the library is not installed ({INSTALL_HINT}).")
        else:
            recorder, close = es_sqlite(f"{tmp}/es.db")
            try:
                bench_es(recorder, "SQLite", w, args.page, results)
            finally:
                close()
            if args.no_pg:
                pass
            elif not HAVE_ES_PG:
                notes.append(f"eventsourcing on PostgreSQL skipped: psycopg 3 missing ({INSTALL_HINT}).")
            else:
                db = await pg.create()
                try:
                    recorder, close = es_postgres(db, pg.host, pg.port, pg.user, pg.password)
                    try:
                        bench_es(recorder, "PostgreSQL", w, args.page, results)
                    finally:
                        close()
                finally:
                    await pg.drop(db)

    env = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}",
           f"SQLAlchemy {sqlalchemy.__version__}", f"asyncpg {asyncpg.__version__}"]
    if pg_version:
        env.append(f"PostgreSQL {pg_version}")
    if HAVE_ES:
        env.append(f"eventsourcing {importlib.metadata.version('eventsourcing')}")
    env.append(f"{os.cpu_count()} CPUs, 1-min load average {load_start:.2f} at start and "
               f"{os.getloadavg()[0]:.2f} at end (other processes share the CPUs: see 'client CPU s')")
    notes.insert(0, "Machine: " + ", ".join(env) + ".")
    notes.append("Our appends ran WITHOUT inline projections (store.inline empty): the raw cost of the log "
                 "(hash chain, streams table, expected-version checks, positions under the write lock). "
                 "The 'append 1,000/tx +inline' row (management projections applied inline) is informational.")
    if any(r.impl == "eventsourcing" for r in results):
        notes.append("eventsourcing: SQLiteApplicationRecorder / PostgresApplicationRecorder (global notification "
                     "order), events serialised by its Mapper + JSONTranscoder inside the timing, as ours are; "
                     "its SQLite connections use WAL + synchronous=NORMAL like ours. Its read decodes every "
                     "notification to a domain event, as read_all does.")
    report(results, args, w, notes)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events appended in batches (default 200,000)")
    p.add_argument("--batch", type=int, default=1_000, help="events per batched transaction (default 1,000)")
    p.add_argument("--single", type=int, default=5_000, help="events appended one per transaction (default 5,000)")
    p.add_argument("--page", type=int, default=5_000, help="read_all / rebuild page size (default 5,000)")
    p.add_argument("--inline", type=int, default=20_000,
                   help="events for the informational append with inline projections (0 skips; default 20,000)")
    p.add_argument("--pg", default="postgres@127.0.0.1:5432", help="PostgreSQL server, user[:password]@host:port")
    p.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    p.add_argument("--no-es", action="store_true", help="skip the eventsourcing comparison")
    args = p.parse_args(argv)
    if not HAVE_ES and not args.no_es:
        log.print(f"eventsourcing is not installed: its comparison is skipped. To run it: {escape(INSTALL_HINT)}")
    with suppress(KeyboardInterrupt):
        asyncio.run(run(args))
        return 0
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
