#!/usr/bin/env python
"""Reads at scale (prints figures; not a test): issue #14's table, through the REST app in process.

One workspace with 10 senders (500 emails a day each) and one 2-step campaign (Mon-Fri
09:00-17:00 Europe/Paris, waits of 30-90 s, step 2 two days after step 1), ``--contacts``
(100,000) contacts, measured through the REST app
served in this process by ``httpx.ASGITransport`` (as issue #14 measured):

- import the contacts as JSON, 10,000 per request;
- list them all by pages of 200: with ``?page=`` and, when the API answers
  ``pagination.next_cursor``, with ``?cursor=`` (the slowest page is reported too); on PostgreSQL
  both again after ``ANALYZE``, as autovacuum leaves the tables a minute after the import (the
  first passes run on the planner's picture of the table from before the import);
- launch the campaign and enroll every contact, 10,000 per request (wall and CPU time);
- forecast 7 days: the first call, then the same call again with nothing changed;
- ``GET /v1/campaigns/{id}`` and ``GET /v1/campaigns/{id}/stats``: p50, p99 and max of ``--reads``
  calls, beside the process's full garbage collections that landed during them (their pauses);
- the process's peak RSS (each size and backend runs in a process of its own).

Beside them, the raw driver's figure for the same rows where one applies: the same contact rows
written by one bare multi-row INSERT per 10,000 into a scratch copy of the contacts table, and
every page read by a bare keyset SELECT on the engine's own table in the listing's own order
(``WHERE workspace_id = ? AND erased = 0 AND (created_at, id) > (?, ?) ORDER BY created_at, id
LIMIT 200``, the listing's index).

The engine's clock is a manual clock set to a Monday 08:00 UTC, so the forecast covers the same
week on every run. Usage::

    .venv/bin/python scripts/bench_scale_reads.py                       # 100,000 on SQLite and PostgreSQL
    .venv/bin/python scripts/bench_scale_reads.py --contacts 5000 --backends sqlite   # quick
    .venv/bin/python scripts/bench_scale_reads.py --million             # 1,000,000 too (long)

PostgreSQL is the server of ``CAMPAIGN_ENGINE_TEST_PG`` (default postgres@127.0.0.1:5432, trust);
the database it creates (``ce_test_*``) is dropped afterwards. SQLite runs in a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import CampaignEngine, ManualClock, create_app  # noqa: E402
from events.gc_pause import freeze_long_lived  # noqa: E402
from tests.conftest import PG_DSN, pg_database  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
BATCH = 10_000
PAGE = 200
SCHEDULE = {"timezone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "09:00",
            "end_time": "17:00", "min_wait_seconds": 30, "max_wait_seconds": 90}
CREATED = 15  # created_at's place among CONTACT_COLUMNS, the table's column order
CONTACT_COLUMNS = ("id", "workspace_id", "email", "email_hash", "email_domain", "first_name", "last_name", "company",
                   "timezone", "custom_fields", "status", "bounced", "replied", "unsubscribed", "erased", "created_at",
                   "updated_at")

out = Console(width=140)
log = Console(stderr=True, width=140)


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process, every thread (aiosqlite runs its statements in one of its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FullCollections:
    """The cyclic garbage collector's full (generation 2) collections while the block runs, and
    their pauses: one lands on whichever request allocates when it is due, and walks every object
    of the process (about 50 ms for 200,000 objects on this machine), so a read's tail is the
    process's, not the read's own."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def text(self) -> str:
        if not self.pauses:
            return "no full GC collection during the reads"
        return (f"{len(self.pauses)} full GC collection(s) during the reads: "
                + ", ".join(f"{pause * 1000:.0f} ms" for pause in self.pauses))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def contact(i: int) -> dict[str, Any]:
    return {"email": f"person{i}@corp{i % 997}.io", "first_name": f"First{i}", "last_name": f"Last{i}",
            "company": f"Corp {i % 997}", "custom_fields": {"plan": "pro" if i % 4 == 0 else "free"}}


class Client:
    """The REST app in process, one workspace's key; every call checked, its time recorded."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, **kw: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        response = await self.http.request(method, path, headers=self.headers, **kw)
        seconds = time.perf_counter() - started
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json(), seconds


async def timed(label: str, action: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    log.print(f"  {label} ...")
    started = time.perf_counter()
    result = await action()
    elapsed = time.perf_counter() - started
    log.print(f"    done in {elapsed:.1f} s; peak RSS so far {peak_rss_mb():,.0f} MB")  # which step sets the peak
    return result, elapsed


# -- the raw driver's figures ---------------------------------------------------------------------
def _row(i: int, ws: str) -> tuple[Any, ...]:
    person = contact(i)
    now = "2026-01-05T08:00:00.000000Z"
    return (f"raw_{i:09d}", ws, person["email"], f"{i:064x}", person["email"].split("@")[1], person["first_name"],
            person["last_name"], person["company"], None, '{"plan": "free"}', "active", False, False, False, False,
            now, now)


async def raw_insert_sqlite(n: int, directory: str) -> float:
    """The contact rows by bare multi-row INSERTs (one per batch) into a scratch SQLite table."""
    db = sqlite3.connect(os.path.join(directory, "raw.db"))
    try:
        db.execute(f"CREATE TABLE raw_contacts ({', '.join(CONTACT_COLUMNS)}, PRIMARY KEY (id))")
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            rows = [_row(i, "ws_raw") for i in range(start, min(start + BATCH, n))]
            per_statement = 32766 // len(CONTACT_COLUMNS)  # SQLite's limit of bound parameters
            for offset in range(0, len(rows), per_statement):
                chunk = rows[offset:offset + per_statement]
                marks = ", ".join(["(" + ", ".join("?" * len(CONTACT_COLUMNS)) + ")"] * len(chunk))
                db.execute(f"INSERT INTO raw_contacts VALUES {marks}", [v for row in chunk for v in row])
            db.commit()
        return time.perf_counter() - started
    finally:
        db.close()


def raw_pages_sqlite(path: str, ws: str) -> tuple[float, float, int]:
    """Every page of the engine's contacts table by a bare keyset SELECT: (total s, slowest page s, rows)."""
    db = sqlite3.connect(path)
    try:
        return _keyset(lambda after: db.execute(
            "SELECT * FROM rm_contacts WHERE workspace_id = ? AND erased = 0 AND (created_at, id) > (?, ?) "
            "ORDER BY created_at, id LIMIT ?", (ws, *after, PAGE)).fetchall())
    finally:
        db.close()


def _keyset(fetch: Callable[[tuple[str, str]], list[Any]]) -> tuple[float, float, int]:
    after, slowest, rows = ("", ""), 0.0, 0
    started = time.perf_counter()
    while True:
        page_started = time.perf_counter()
        page = fetch(after)
        slowest = max(slowest, time.perf_counter() - page_started)
        if not page:
            break
        rows += len(page)
        after = (page[-1][CREATED], page[-1][0])
    return time.perf_counter() - started, slowest, rows


async def raw_insert_pg(n: int, dsn: str) -> float:
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("CREATE TABLE raw_contacts (id text PRIMARY KEY, workspace_id text, email text, "
                         "email_hash text, email_domain text, first_name text, last_name text, company text, "
                         "timezone text, custom_fields text, status text, bounced bool, replied bool, "
                         "unsubscribed bool, erased bool, created_at text, updated_at text)")
        started = time.perf_counter()
        width = len(CONTACT_COLUMNS)
        for start in range(0, n, BATCH):
            rows = [_row(i, "ws_raw") for i in range(start, min(start + BATCH, n))]
            per_statement = 32767 // width  # PostgreSQL's limit of bind parameters
            for offset in range(0, len(rows), per_statement):
                chunk = rows[offset:offset + per_statement]
                marks = ", ".join("(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                                  for r in range(len(chunk)))
                await db.execute(f"INSERT INTO raw_contacts VALUES {marks}", *[v for row in chunk for v in row])
        return time.perf_counter() - started
    finally:
        await db.close()


async def raw_pages_pg(dsn: str, ws: str) -> tuple[float, float, int]:
    db = await asyncpg.connect(dsn)
    try:
        statement = await db.prepare("SELECT * FROM rm_contacts WHERE workspace_id = $1 AND erased = false "
                                     "AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4")
        after, slowest, rows = ("", ""), 0.0, 0
        started = time.perf_counter()
        while True:
            page_started = time.perf_counter()
            page = await statement.fetch(ws, *after, PAGE)
            slowest = max(slowest, time.perf_counter() - page_started)
            if not page:
                break
            rows += len(page)
            after = (page[-1]["created_at"], page[-1]["id"])
        return time.perf_counter() - started, slowest, rows
    finally:
        await db.close()


# -- the run --------------------------------------------------------------------------------------
@asynccontextmanager
async def database(backend: str, directory: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory}/engine.db"
    else:
        async with pg_database() as url:
            yield url


async def list_all(api: Client, mode: str, ids: list[str] | None = None) -> tuple[float, str, int]:
    """Every contact by pages of 200 (``page`` numbers, or the ``cursor`` the API hands back):
    (seconds, the slowest page and the full GC collections of the walk as text, contacts seen).

    With `ids`, the ids seen are kept there as one newline-joined text per ``BATCH`` (what an
    enroll request takes): a million ids as a million str objects would put about 100 MB of
    this client's own into the process's peak RSS, which is meant to show the engine's."""
    with FullCollections() as collections:
        total, slowest, seen = await _walk(api, mode, ids)
    pauses = (f"; {len(collections.pauses)} full GC collections, longest {max(collections.pauses) * 1000:.0f} ms"
              if collections.pauses else "")
    return total, f"slowest {slowest * 1000:.0f} ms{pauses}", seen


async def _walk(api: Client, mode: str, ids: list[str] | None) -> tuple[float, float, int]:
    seen, slowest, page, cursor = 0, 0.0, 1, None
    pending: list[str] = []
    started = time.perf_counter()
    while True:
        query = f"per_page={PAGE}&" + (f"cursor={cursor}" if cursor else f"page={page}" if mode == "page" else "")
        body, seconds = await api.call("GET", f"/v1/contacts?{query}")
        slowest = max(slowest, seconds)
        seen += len(body["data"])
        if ids is not None:
            pending += [item["id"] for item in body["data"]]
            if len(pending) >= BATCH:
                ids.append("\n".join(pending[:BATCH]))
                del pending[:BATCH]
        if mode == "cursor":
            cursor = body["pagination"].get("next_cursor")
            if not cursor:
                break
        else:
            if not body["data"] or seen >= body["pagination"]["total"]:
                break
            page += 1
    if ids is not None and pending:
        ids.append("\n".join(pending))
    return time.perf_counter() - started, slowest, seen


async def run(backend: str, n: int, reads: int) -> list[tuple[str, str, str]]:
    """One backend at one size: rows of (measure, engine figure, raw driver figure)."""
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="ce_bench_reads_") as directory:
        async with database(backend, directory) as url:
            clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))  # a Monday
            async with CampaignEngine(url, clock=clock, secret_key=SECRET) as engine:
                ws = await engine.create_workspace("bench", monthly_limit=100_000_000)
                app = create_app(engine, max_body_bytes=64 * 1024 * 1024, rate_limit_per_minute=10_000_000)
                freeze_long_lived()  # as `serve` does once started
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=None) as http:
                    api = Client(http, ws.api_key)
                    log.print(f"{backend}, {n:,} contacts:")
                    senders = [(await api.call("POST", "/v1/senders", json={
                        "email": f"rep{i}@sender{i}.io", "daily_limit": 500,
                        "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"}}))[0]["id"] for i in range(10)]
                    campaign = (await api.call("POST", "/v1/campaigns", json={
                        "name": "scale", "sender_ids": senders, "schedule": SCHEDULE,
                        "steps": [{"subject": "Hi {{first_name}}", "body_html": "<p>Hello {{company}}</p>"},
                                  {"subject": "Re: hi", "body_html": "<p>Again</p>", "delay": {"days": 2}}]}))[0]["id"]

                    async def import_all() -> None:
                        for start in range(0, n, BATCH):
                            await api.call("POST", "/v1/contacts/import",
                                           json=[contact(i) for i in range(start, min(start + BATCH, n))])

                    _, seconds = await timed("import", import_all)
                    raw = (await raw_insert_sqlite(n, directory) if backend == "sqlite"
                           else await raw_insert_pg(n, PG_DSN.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1]))
                    rows.append((f"import {n:,} contacts (JSON, {BATCH:,} per request)",
                                 f"{seconds:.1f} s ({n / seconds:,.0f}/s)", f"{raw:.2f} s ({n / raw:,.0f}/s)"))

                    seen_ids: list[str] = []
                    (total, slowest, seen), _ = await timed("list by page", lambda: list_all(api, "page", seen_ids))
                    pages = -(-seen // PAGE)
                    if backend == "sqlite":
                        raw_total, raw_slowest, _ = raw_pages_sqlite(f"{directory}/engine.db", ws.id)
                    else:
                        raw_total, raw_slowest, _ = await raw_pages_pg(
                            PG_DSN.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1], ws.id)
                    raw_text = f"{raw_total:.2f} s (slowest page {raw_slowest * 1000:.1f} ms)"
                    rows.append((f"list {seen:,} by pages of {PAGE} (?page=)",
                                 f"{total:.1f} s ({total / pages * 1000:.0f} ms a page, {slowest})", raw_text))
                    first, _ = await api.call("GET", f"/v1/contacts?per_page={PAGE}")
                    if "next_cursor" in first.get("pagination", {}):
                        (total, slowest, seen), _ = await timed("list by cursor", lambda: list_all(api, "cursor"))
                        rows.append((f"list {seen:,} by pages of {PAGE} (?cursor=)",
                                     f"{total:.1f} s ({total / pages * 1000:.0f} ms a page, {slowest})", raw_text))
                    else:
                        rows.append((f"list by pages of {PAGE} (?cursor=)", "not offered by the API", ""))
                    if backend == "postgres":
                        # The passes above ran on the planner's picture of the table from before the
                        # import; autovacuum analyzes it within a minute or so.
                        # Again after ANALYZE: what the listing costs once that has happened.
                        admin = await asyncpg.connect(PG_DSN.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1])
                        try:
                            await admin.execute("ANALYZE")
                        finally:
                            await admin.close()
                        for mode in ("page", "cursor"):
                            (total, slowest, seen), _ = await timed(f"list by {mode} after ANALYZE",
                                                                    functools.partial(list_all, api, mode))
                            rows.append((f"list {seen:,} by pages of {PAGE} (?{mode}=), after ANALYZE",
                                         f"{total:.1f} s ({total / pages * 1000:.0f} ms a page, {slowest})",
                                         raw_text))

                    enrolling = sum(chunk.count("\n") + 1 for chunk in seen_ids)  # as the listing by page found them
                    await api.call("POST", f"/v1/campaigns/{campaign}/launch")

                    async def enroll_all() -> None:
                        for chunk in seen_ids:
                            await api.call("POST", f"/v1/campaigns/{campaign}/enrollments",
                                           json={"contact_ids": chunk.split("\n")})

                    cpu = cpu_seconds()
                    _, seconds = await timed("enroll", enroll_all)
                    cpu = cpu_seconds() - cpu
                    rows.append((f"enroll {enrolling:,} ({BATCH:,} per request)",
                                 f"{seconds:.1f} s (CPU {cpu:.1f} s)", ""))

                    log.print("  forecast ...")
                    cpu = time.process_time()  # the app runs in this process: its CPU time is the call's
                    forecast, first_s = await api.call("GET", f"/v1/campaigns/{campaign}/forecast?days=7")
                    cpu = time.process_time() - cpu
                    repeats = [(await api.call("GET", f"/v1/campaigns/{campaign}/forecast?days=7"))[1]
                               for _ in range(20)]
                    log.print(f"    done; peak RSS so far {peak_rss_mb():,.0f} MB")
                    rows.append((f"forecast 7 days over {enrolling:,} queued ({forecast['total']:,} sends)",
                                 f"first {first_s * 1000:,.0f} ms (CPU {cpu * 1000:,.0f} ms), unchanged p50 "
                                 f"{statistics.median(repeats) * 1000:.1f} ms", ""))
                    for label, path in (("GET /v1/campaigns/{id}", f"/v1/campaigns/{campaign}"),
                                        ("GET /v1/campaigns/{id}/stats", f"/v1/campaigns/{campaign}/stats")):
                        log.print(f"  {label} x {reads} ...")
                        with FullCollections() as collections:
                            times = [(await api.call("GET", path))[1] for _ in range(reads)]
                        rows.append((label, f"p50 {percentile(times, 0.5) * 1000:.1f} ms, "
                                            f"p99 {percentile(times, 0.99) * 1000:.1f} ms, max "
                                            f"{max(times) * 1000:.1f} ms", collections.text()))
                    rows.append(("peak RSS of the process (this run)", f"{peak_rss_mb():,.0f} MB", ""))
    return rows


async def main(args: argparse.Namespace) -> None:
    sizes = [args.contacts] + ([1_000_000] if args.million and args.contacts != 1_000_000 else [])
    runs = [(n, backend) for n in sizes for backend in args.backends]
    if len(runs) > 1:  # one process per run, so that each peak RSS is that run's own
        out.print(f"campaign-engine reads at scale; {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}")
        for n, backend in runs:
            subprocess.run([sys.executable, __file__, "--contacts", str(n), "--backends", backend,
                            "--reads", str(args.reads)], check=True)
        return
    (n, backend), = runs
    out.print(f"load {os.getloadavg()[0]:.2f} at the start")
    rows = await run(backend, n, args.reads)
    table = Table(title=f"{backend}, {n:,} contacts, 10 senders, one 2-step campaign (REST in process)")
    for col in ("measure", "engine through REST", "raw driver, same rows"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--million", action="store_true", help="also run at 1,000,000 contacts (long)")
    p.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b], default=["sqlite", "postgres"],
                   help="sqlite,postgres")
    p.add_argument("--reads", type=int, default=200, help="calls for each p50/p99")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
