#!/usr/bin/env python
"""Bulk import and enroll benchmark (prints figures; not a test), through the REST app in process on SQLite.

What issue #14 measures from outside: a workspace with ``--senders`` (10) senders and one 2-step
campaign (Mon-Fri 09:00-17:00 Europe/Paris, waits of 30-90 s), launched; ``--contacts`` contacts
imported as JSON, ``--per-request`` (10,000) per ``POST /v1/contacts/import``; then all of them
enrolled by ``contact_ids``, as many per ``POST /v1/campaigns/{id}/enrollments``. Beside each
figure, the ceiling: the raw driver (``sqlite3``, no SQLAlchemy, no events) inserting the same
rows into a bare copy of the read model's table (``rm_contacts``, ``rm_enrollments``, indexes
included) in one ``executemany`` per request, in the same run on the same disk.

Usage::

    .venv/bin/python scripts/bench_bulk.py                        # 10,000 then 100,000 contacts
    .venv/bin/python scripts/bench_bulk.py --contacts 10000       # one size
    .venv/bin/python scripts/bench_bulk.py --contacts 10000 --profile import   # cProfile, top 30
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import CampaignEngine, ManualClock, create_app  # noqa: E402
from projections import tables as t  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
SCHEDULE = {"timezone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "09:00",
            "end_time": "17:00", "min_wait_seconds": 30, "max_wait_seconds": 90}
STEPS = [{"subject": "Hello {{first_name}}", "body_html": "<p>Hi {{first_name}} at {{company}}</p>"},
         {"subject": "Following up", "body_html": "<p>Any thoughts?</p>", "delay": {"days": 2}}]

out = Console(width=120)


def contact_rows(count: int) -> list[dict[str, Any]]:
    """The import's rows: a few fields and one custom field, as a CRM export gives them."""
    return [{"email": f"person{i}@company{i % 997}.example", "first_name": f"First{i}", "last_name": f"Last{i}",
             "company": f"Company {i % 997}", "lead_score": str(i % 100)} for i in range(count)]


def cpu_seconds() -> float:
    """CPU time of this process, every thread (aiosqlite runs its statements in one of its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed(run: Callable[[], Awaitable[None]], profile: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``run``: on a shared machine the CPU figure is the steadier one."""
    profiler = cProfile.Profile() if profile else None
    cpu = cpu_seconds()
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    await run()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    if profiler:
        mine = r"/(engine|events|projections)/"
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(mine, 45)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return elapsed, cpu


def raw_insert(path: Path, table: Any, rows: list[tuple[Any, ...]], per_request: int) -> float:
    """Seconds for sqlite3's executemany of ``rows`` into a bare copy of ``table``, one commit per request."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
        db.execute(f"PRAGMA {pragma}")
    dialect = sqlite_dialect.dialect()
    db.execute(str(CreateTable(table).compile(dialect=dialect)))
    for index in table.indexes:
        db.execute(str(CreateIndex(index).compile(dialect=dialect)))
    marks = ",".join("?" * len(table.columns))
    sql = f"INSERT INTO {table.name} VALUES ({marks})"
    start = time.perf_counter()
    for i in range(0, len(rows), per_request):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, rows[i:i + per_request])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


async def run(count: int, per_request: int, senders: int, profile: str | None, tmp: Path) -> dict[str, float]:
    clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))  # a Monday
    url = f"sqlite+aiosqlite:///{tmp / f'bench_{count}.db'}"
    figures: dict[str, float] = {}
    async with CampaignEngine(url, clock=clock, secret_key=SECRET) as engine:
        app = create_app(engine, max_body_bytes=64 * 1024 * 1024, rate_limit_per_minute=1_000_000)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=600) as client:
            ws = await engine.create_workspace("bench", monthly_limit=10_000_000)
            headers = {"Authorization": f"Bearer {ws.api_key}"}
            sender_ids = []
            for i in range(senders):
                r = await client.post("/v1/senders", headers=headers, json={
                    "email": f"rep{i}@sender{i}.example", "from_name": f"Rep {i}", "daily_limit": 500,
                    "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"}})
                assert r.status_code in (200, 201), r.text
                sender_ids.append(r.json()["id"])
            r = await client.post("/v1/campaigns", headers=headers, json={
                "name": "bench", "sender_ids": sender_ids, "steps": STEPS, "schedule": SCHEDULE})
            assert r.status_code in (200, 201), r.text
            campaign = r.json()["id"]
            r = await client.post(f"/v1/campaigns/{campaign}/launch", headers=headers)
            assert r.status_code == 200, r.text

            rows = contact_rows(count)

            async def do_import() -> None:
                for i in range(0, count, per_request):
                    answer = await client.post("/v1/contacts/import", headers=headers, json=rows[i:i + per_request])
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["created"] == len(rows[i:i + per_request]), answer.json()

            figures["import"], figures["import_cpu"] = await timed(do_import, profile == "import")
            async with engine.store.reading() as conn:
                ids = [r[0] for r in (await conn.exec_driver_sql(
                    "SELECT id FROM rm_contacts WHERE workspace_id = ? ORDER BY created_at, id", (ws.id,))).all()]
                contact_table = [tuple(r) for r in (await conn.exec_driver_sql("SELECT * FROM rm_contacts")).all()]
            assert len(ids) == count

            async def do_enroll() -> None:
                for i in range(0, count, per_request):
                    part = ids[i:i + per_request]
                    answer = await client.post(f"/v1/campaigns/{campaign}/enrollments", headers=headers,
                                               json={"contact_ids": part})
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["added"] == len(part), answer.json()

            figures["enroll"], figures["enroll_cpu"] = await timed(do_enroll, profile == "enroll")
            async with engine.store.reading() as conn:
                enrollment_table = [tuple(r) for r in (await conn.exec_driver_sql(
                    "SELECT * FROM rm_enrollments")).all()]
    figures["raw_contacts"] = raw_insert(tmp / f"raw_contacts_{count}.db", t.contacts, contact_table, per_request)
    figures["raw_enrollments"] = raw_insert(tmp / f"raw_enrollments_{count}.db", t.enrollments, enrollment_table,
                                            per_request)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, action="append", help="sizes (default 10,000 and 100,000)")
    parser.add_argument("--per-request", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--profile", choices=["import", "enroll"], help="cProfile one phase (to stderr)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    sizes = args.contacts or [10_000, 100_000]
    table = Table(title="Bulk import and enroll, REST in process, SQLite")
    for name in ("contacts", "import s (CPU s)", "contacts/s", "raw INSERT contacts/s", "enroll s (CPU s)",
                 "enrollments/s", "raw INSERT enrollments/s"):
        table.add_column(name, justify="right")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_bulk_") as tmp:
        for count in sizes:
            figures = asyncio.run(run(count, args.per_request, args.senders, args.profile, Path(tmp)))
            results[count] = figures
            table.add_row(f"{count:,}", f"{figures['import']:.2f} ({figures['import_cpu']:.2f})",
                          f"{count / figures['import']:,.0f}", f"{count / figures['raw_contacts']:,.0f}",
                          f"{figures['enroll']:.2f} ({figures['enroll_cpu']:.2f})",
                          f"{count / figures['enroll']:,.0f}", f"{count / figures['raw_enrollments']:,.0f}")
    out.print(table)
    if args.json:
        out.print(json.dumps(results))


if __name__ == "__main__":
    main()
