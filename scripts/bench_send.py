#!/usr/bin/env python
"""Send-path benchmark (prints figures; not a test): ``tick()`` against a raw aiosmtplib loop, same sink.

One campaign, one step, ``--senders`` (32) senders, no wait between sends, a window open all day,
and an aiosmtpd sink in another process that accepts everything. In the same run:

* **raw**: an aiosmtplib loop over ``--raw-connections`` (32) reused connections sends one
  pre-rendered message per email, as fast as the sink takes them: the ceiling of this machine;
* **tick**: ``engine.tick()`` called at every ``next_due_at`` under a ManualClock (the clock set to
  each answer) until everything is sent; emails/s overall and for the first and last 10% of the
  emails, and the process's peak RSS.

Each count of ``--emails`` (20,000 and 100,000) gets a fresh SQLite database. Several workers on
PostgreSQL are measured by ``scripts/bench_scale.py``.

Usage::

    .venv/bin/python scripts/bench_send.py                       # 20,000 and 100,000
    .venv/bin/python scripts/bench_send.py --emails 5000         # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import CampaignEngine, ManualClock  # noqa: E402
from tests.scale.helpers import build  # noqa: E402

SINK_CODE = r"""
import asyncio, sys
from aiosmtpd.controller import Controller

class Count:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Count.n += 1
        return "250 OK"

controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.readline()
controller.stop()
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """An aiosmtpd server in a child process (its own core: the engine must not share its CPU)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", SINK_CODE, str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the sink did not start")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def rates(batches: list[tuple[float, float, int]], start: float) -> tuple[float, float, float]:
    """(overall, first 10%, last 10%) emails/s from (began, ended, emails) of each batch of sends.

    A batch is one tick (or one email of the raw loop); the first 10% is timed from the start to
    the end of the batch that completes it, the last 10% from the start of the batch that begins
    it to the end, so a coarse batch makes those figures conservative, never flattering.
    """
    n = sum(count for _, _, count in batches)
    tenth = max(1, n // 10)
    overall = n / (batches[-1][1] - start)
    done = 0
    first = 0.0
    for _, ended, count in batches:
        done += count
        if done >= tenth:
            first = done / (ended - start)
            break
    done = 0
    last = 0.0
    for began, _, count in batches:
        if done + count > n - tenth:
            last = (n - done) / (batches[-1][1] - began)
            break
        done += count
    return overall, first, last


async def raw_loop(port: int, emails: int, connections: int) -> tuple[float, float, float]:
    import aiosmtplib

    message = (b"From: rep@sender.io\r\nTo: c@corp.io\r\nSubject: Hello C\r\nMessage-ID: <x@sender.io>\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi C at Corp</p>\r\n")
    clients = []
    for _ in range(connections):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
        await client.connect()
        clients.append(client)
    stamps: list[tuple[float, float, int]] = []
    counter = iter(range(emails))

    async def worker(client: aiosmtplib.SMTP) -> None:
        for i in counter:
            began = time.perf_counter()
            await client.sendmail("rep@sender.io", [f"c{i}@corp.io"], message)
            stamps.append((began, time.perf_counter(), 1))

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    for client in clients:
        await client.quit()
    return rates(stamps, start)


async def ticking(port: int, emails: int, senders: int, tmp: Path) -> tuple[tuple[float, float, float], int]:
    clock = ManualClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    url = f"sqlite+aiosqlite:///{tmp / f'send_{emails}.db'}"
    async with CampaignEngine(url, clock=clock, secret_key="bench-secret-key-0123456789") as engine:
        await build(engine, "127.0.0.1", port, contacts=emails, senders=senders, campaigns=1,
                    daily_limit=100_000, chunk=5000)
        stamps: list[tuple[float, float, int]] = []
        ticks = sent = 0
        start = time.perf_counter()
        while sent < emails:
            began = time.perf_counter()
            report = await engine.tick()
            ticks += 1
            sent += report.sent
            if report.sent:
                stamps.append((began, time.perf_counter(), report.sent))
            if report.next_due_at is None:
                break
            clock.set(max(report.next_due_at, clock.now()))
        if sent < emails:
            raise RuntimeError(f"tick sent {sent} of {emails}")
    return rates(stamps, start), ticks


RAW_PROCESS = r"""
import asyncio, sys, time
import aiosmtplib
port, count, connections = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
message = (b"From: rep@sender.io\r\nTo: c@corp.io\r\nSubject: Hello C\r\nMessage-ID: <x@sender.io>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi C at Corp</p>\r\n")
async def main():
    clients = []
    for _ in range(connections):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
        await client.connect()
        clients.append(client)
    counter = iter(range(count))
    async def worker(client):
        for i in counter:
            await client.sendmail("rep@sender.io", [f"c{i}@corp.io"], message)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    print(time.perf_counter() - start, flush=True)
asyncio.run(main())
"""


def raw_processes(port: int, emails: int, processes: int, connections: int) -> float:
    """`processes` raw loops at once, each its share of `emails`: emails/s over the slowest."""
    procs = [subprocess.Popen([sys.executable, "-c", RAW_PROCESS, str(port), str(emails // processes),
                               str(connections)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    times = []
    for proc in procs:
        assert proc.stdout is not None
        times.append(float(proc.stdout.readline()))
        proc.wait(timeout=60)
    return (emails // processes * processes) / max(times)


async def postgres_workers(port: int, emails: int, senders: int, workers: int, tmp: Path) -> float:
    """`workers` ``campaign-engine worker`` processes on one PostgreSQL database: emails/s from
    the first email sent to the last (start-up excluded), checked in the log."""
    from sqlalchemy import func, select

    from projections.sending import emails as email_rows
    from tests.conftest import pg_database
    from tests.scale.helpers import SECRET, Worker, stop_all

    async with pg_database() as url:
        async with CampaignEngine(url, secret_key=SECRET) as engine:
            await build(engine, "127.0.0.1", port, contacts=emails, senders=senders, campaigns=1,
                        daily_limit=100_000, chunk=5000)
            running: list[Worker] = []
            try:
                running = [Worker(url, tmp / f"pg{workers}_{i}.log") for i in range(workers)]
                first = 0.0
                deadline = time.perf_counter() + 600
                while True:
                    async with engine.store.reading() as conn:
                        sent = int((await conn.execute(select(func.count()).select_from(email_rows).where(
                            email_rows.c.status == "sent"))).scalar() or 0)
                    now = time.perf_counter()
                    if sent and not first:
                        first = now
                    if sent >= emails:
                        break
                    if now > deadline:
                        raise RuntimeError(f"stuck at {sent} of {emails}")
                    await asyncio.sleep(0.02)
                return emails / (now - first)
            finally:
                for worker in running:
                    worker.signal(15)
                stop_all(running)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", default="20000,100000")
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--raw-connections", type=int, default=32)
    parser.add_argument("--workers", default="", help="PostgreSQL: also N worker processes vs N raw loops, e.g. 1,2,4")
    parser.add_argument("--pg-emails", type=int, default=10_000)
    args = parser.parse_args()
    print(f"send path: 1 campaign, 1 step, {args.senders} senders, no waits; sink in another process "
          f"(pid {os.getpid()} is the engine)")
    with tempfile.TemporaryDirectory() as tmp:
        for emails in (int(n) for n in args.emails.split(",")):
            sink = Sink()
            try:
                raw = await raw_loop(sink.port, emails, args.raw_connections)
                (tick, ticks) = await ticking(sink.port, emails, args.senders, Path(tmp))
            finally:
                sink.stop()
            print(f"\nN = {emails:,}")
            print(f"  raw aiosmtplib loop, {args.raw_connections} connections: {raw[0]:8.0f} emails/s "
                  f"(first 10% {raw[1]:.0f}/s, last 10% {raw[2]:.0f}/s)")
            print(f"  engine.tick() at every next_due_at ({ticks} ticks):  {tick[0]:8.0f} emails/s "
                  f"(first 10% {tick[1]:.0f}/s, last 10% {tick[2]:.0f}/s)")
            print(f"  tick / raw: {tick[0] / raw[0]:.2f}   last 10% / first 10%: {tick[2] / tick[1]:.2f}   "
                  f"peak RSS so far: {peak_rss_mb():.0f} MB")
        for workers in (int(n) for n in args.workers.split(",") if n):
            sink = Sink()
            try:
                raw_rate = raw_processes(sink.port, args.pg_emails, workers, args.raw_connections)
                worker_rate = await postgres_workers(sink.port, args.pg_emails, args.senders, workers, Path(tmp))
            finally:
                sink.stop()
            print(f"\nPostgreSQL, {args.pg_emails:,} emails: {workers} worker process(es) {worker_rate:8.0f} emails/s; "
                  f"{workers} raw loop process(es) {raw_rate:8.0f} emails/s; ratio {worker_rate / raw_rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
