#!/usr/bin/env python
"""Scale benchmark (prints figures; not a test): sending with several worker processes, and a rebuild.

1. Sending: ``--emails`` (3,000) one-step emails to as many contacts, in ``--campaigns`` (10)
   campaigns sharing ``--senders`` (4) senders (a tick sends at most one email per (campaign,
   sender) pair, so 40 pairs give up to 40 sends a tick), every campaign always open with no wait
   between sends. For each count in ``--workers`` (1,2,4): a fresh PostgreSQL database, that many
   ``campaign-engine worker`` processes, one aiosmtpd sink in this process. Reported: emails/s from
   the workers' start (process start-up included) and from the first message the sink received
   to the last (steady state); duplicates at the sink (must be 0).
2. Rebuild: a fresh database with ``--events`` (1,000,000) events of a realistic mix appended in
   batches through ``store.append_many`` (imports of 1,000 contacts, enrolments of 1,000 with their
   first ``email.scheduled``, ticks of 40 claims, then per email ``email.sent`` with the next step's
   ``email.scheduled`` or ``enrollment.completed``, opens on a third, replies on one in twenty),
   then the engine's ``Projector`` (every read model) rebuilt from position 0. Personal fields are
   encrypted with per-contact keys as in production, so the rebuild decrypts them.

Usage::

    .venv/bin/python scripts/bench_scale.py                          # the full run
    .venv/bin/python scripts/bench_scale.py --emails 600 --events 50000 --workers 1,2   # quick

Needs the PostgreSQL server of ``CAMPAIGN_ENGINE_TEST_PG`` (default postgres@127.0.0.1:5432,
trust). Every database it creates (``ce_test_*``) is dropped afterwards. On the 2-core machine
the workers, PostgreSQL and the sink share the same two cores, so more workers than cores mostly
measure contention.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import CampaignEngine  # noqa: E402
from events.catalog import contact as ce  # noqa: E402
from events.catalog import email as em  # noqa: E402
from events.catalog import enrollment as en  # noqa: E402
from events.registry import Event  # noqa: E402
from events.store import AppendBatch  # noqa: E402
from tests.conftest import pg_database  # noqa: E402
from tests.delivery.smtp_server import SmtpSink  # noqa: E402
from tests.scale.helpers import ALWAYS_OPEN, SECRET, Worker, build, stop_all  # noqa: E402

out = Console(width=120)
log = Console(stderr=True, width=120)


# -- 1. sending ---------------------------------------------------------------------------------
async def bench_send(n_workers: int, emails: int, campaigns: int, senders: int, tmp: Path) -> dict[str, float]:
    async with pg_database() as url:
        with SmtpSink() as sink:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                await build(engine, sink.host, sink.port, contacts=emails, senders=senders, campaigns=campaigns)
            log.print(f"send: {n_workers} worker(s), {emails:,} emails ...")
            workers: list[Worker] = []
            first = 0.0
            try:
                start = time.perf_counter()
                workers = [Worker(url, tmp / f"w{n_workers}_{i}.log") for i in range(n_workers)]
                deadline = start + 900
                while len(sink.messages) < emails:
                    if not first and sink.messages:
                        first = time.perf_counter()
                    if time.perf_counter() > deadline or not all(w.running() for w in workers):
                        raise RuntimeError(f"stuck at {len(sink.messages)} emails; see {tmp}")
                    await asyncio.sleep(0.05)
                end = time.perf_counter()
                for w in workers:
                    w.signal(signal.SIGTERM)
                codes = [w.wait(60) for w in workers]
            finally:
                stop_all(workers)
            ids = Counter(m.message_id for m in sink.messages)
    return {"workers": n_workers, "emails": emails, "total_s": end - start, "steady_s": end - (first or start),
            "duplicates": sum(n - 1 for n in ids.values()), "bad_exits": sum(1 for c in codes if c != 0)}


# -- 2. rebuild ---------------------------------------------------------------------------------
class LogWriter:
    """Appends the synthetic history in batches, the inline projections switched off."""

    def __init__(self, engine: CampaignEngine, ws: str, batch: int) -> None:
        self.engine, self.ws, self.batch = engine, ws, batch
        self.pending: list[AppendBatch] = []
        self.count = 0
        self.written = 0

    async def add(self, stream: str, events: list[Event]) -> None:
        self.pending.append(AppendBatch(stream, events))
        self.count += len(events)
        if self.count >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await self.engine.store.append_many(self.pending, workspace_id=self.ws)
            self.written += self.count
            self.pending, self.count = [], 0


async def generate(engine: CampaignEngine, target: int, batch: int) -> int:
    """About ``target`` events of a campaign's life; returns the events in the log."""
    rng = random.Random(11)
    ws = (await engine.create_workspace("bench", monthly_limit=10_000_000)).id
    sids = [(await engine.create_sender(ws, {"email": f"rep{i}@sender{i}.io", "daily_limit": 100_000, "smtp": {
        "host": "127.0.0.1", "port": 9, "security": "none"}}))["id"] for i in range(4)]
    cids = []
    for k in range(10):
        cmp = await engine.create_campaign(ws, {"name": f"bench {k}", "sender_ids": sids, "schedule": ALWAYS_OPEN,
                                                "steps": [{"subject": "Hi {{first_name}}", "body_html": "<p>1</p>"},
                                                          {"subject": "Re", "body_html": "<p>2</p>",
                                                           "delay": {"days": 2}}]})
        await engine.launch_campaign(ws, cmp["id"])
        cids.append(cmp["id"])
    engine.store.inline.clear()  # raw appends: the rebuild below builds every read model from the log
    writer = LogWriter(engine, ws, batch)
    per_contact = 9.35  # created, enrolled+scheduled, 2 x (claimed, sent + next), 1/3 opened, 1/20 replied
    contacts = max(1000, int((target - await engine.store.last_position()) / per_contact))
    base = datetime.now(UTC)
    seq = 0
    for start in range(0, contacts, 1000):
        people = []
        for i in range(start, min(start + 1000, contacts)):
            cid = f"con_{rng.getrandbits(80):020x}"
            address = f"p{i}@corp{i % 500}.io"
            await writer.add(f"contact-{cid}", [ce.ContactCreated(
                contact_id=cid, email=address, email_hash=engine.vault.lookup_hash(address),
                email_domain=f"corp{i % 500}.io", first_name=f"First{i}", last_name=f"Last{i}",
                company=f"Corp {i % 500}", timezone=None, custom_fields={"plan": "pro"} if i % 4 == 0 else None)])
            people.append(cid)
        await writer.flush()
        enrolled = []
        for cid in people:
            seq += 1
            eid = f"enr_{rng.getrandbits(80):020x}"
            campaign = cids[seq % len(cids)]
            base_ids = {"enrollment_id": eid, "campaign_id": campaign, "contact_id": cid}
            await writer.add(f"enrollment-{eid}", [
                en.EnrollmentCreated(**base_ids, batch_number=None, priority=0, seq=seq),
                em.EmailScheduled(**base_ids, email_id=f"{eid}.1", step=1, due_at=base, sender_id=None, seq=seq)])
            enrolled.append((base_ids, sids[seq % len(sids)]))
        await writer.flush()
        for step in (1, 2):
            for t0 in range(0, len(enrolled), 40):  # one tick: 40 claims in one transaction
                tick = enrolled[t0:t0 + 40]
                at = base + timedelta(days=2 * (step - 1), seconds=t0)
                for ids, sid in tick:
                    await writer.add(f"enrollment-{ids['enrollment_id']}", [em.EmailClaimed(
                        **ids, email_id=f"{ids['enrollment_id']}.{step}", step=step, sender_id=sid,
                        message_id=f"<{ids['enrollment_id']}.{step}@sender.io>",
                        lease_until=at + timedelta(minutes=10))])
                await writer.flush()
                for ids, sid in tick:  # outcomes: sent + the next step (or completion), opens, replies
                    email_id = f"{ids['enrollment_id']}.{step}"
                    evs: list[Event] = [em.EmailSent(**ids, email_id=email_id, step=step, sender_id=sid,
                                                     message_id=f"<{email_id}@sender.io>", smtp_code=250,
                                                     links=("https://example.com/pricing",))]
                    if step == 1:
                        evs.append(em.EmailScheduled(**ids, email_id=f"{ids['enrollment_id']}.2", step=2,
                                                     due_at=at + timedelta(days=2), sender_id=sid, seq=0))
                    else:
                        evs.append(en.EnrollmentCompleted(**ids))
                    if rng.random() < 1 / 3:
                        evs.append(em.EmailOpened(**ids, email_id=email_id, step=step))
                    if step == 2 and rng.random() < 0.05:
                        evs.append(em.EmailReplied(**ids, email_id=email_id, step=step, out_of_office=False,
                                                   message_id=None))
                    await writer.add(f"enrollment-{ids['enrollment_id']}", evs)
                await writer.flush()
        log.print(f"rebuild: generated {writer.written:,} events", end="\r")
    await writer.flush()
    log.print()
    return await engine.store.last_position()


async def bench_rebuild(events: int, batch: int) -> dict[str, float]:
    async with pg_database() as url:
        async with CampaignEngine(url, secret_key=SECRET) as engine:
            started = time.perf_counter()
            total = await generate(engine, events, batch)
            generated = time.perf_counter() - started
            log.print(f"rebuild: rebuilding every read model from {total:,} events ...")
            started = time.perf_counter()
            done = await engine.projector.rebuild(engine.store)
            seconds = time.perf_counter() - started
            return {"events": done, "generate_s": generated, "rebuild_s": seconds}


# -- main ---------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> None:
    out.print(f"campaign-engine scale benchmark; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if args.workers:
        table = Table(title=f"Sending {args.emails:,} emails: {args.campaigns} campaigns x {args.senders} senders, "
                            "PostgreSQL, one aiosmtpd sink")
        for col in ("workers", "emails", "seconds (with start-up)", "emails/s", "seconds (steady)",
                    "emails/s (steady)", "duplicates", "non-zero exits"):
            table.add_column(col, justify="right")
        with tempfile.TemporaryDirectory(prefix="ce_bench_scale_") as tmp:
            for n in args.workers:
                r = await bench_send(n, args.emails, args.campaigns, args.senders, Path(tmp))
                table.add_row(str(n), f"{r['emails']:,}", f"{r['total_s']:.1f}", f"{r['emails'] / r['total_s']:.0f}",
                              f"{r['steady_s']:.1f}", f"{r['emails'] / r['steady_s']:.0f}", str(r["duplicates"]),
                              str(r["bad_exits"]))
        out.print(table)
    if args.events:
        r = await bench_rebuild(args.events, args.batch)
        table = Table(title="Projection rebuild from position 0 (PostgreSQL, every read model)")
        for col in ("events", "generate s", "rebuild s", "events/s"):
            table.add_column(col, justify="right")
        table.add_row(f"{r['events']:,}", f"{r['generate_s']:.1f}", f"{r['rebuild_s']:.1f}",
                      f"{r['events'] / r['rebuild_s']:,.0f}")
        out.print(table)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--emails", type=int, default=3000)
    p.add_argument("--campaigns", type=int, default=10)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 4],
                   help="worker counts to measure, e.g. 1,2,4 ('' skips sending)")
    p.add_argument("--events", type=int, default=1_000_000, help="events for the rebuild (0 skips it)")
    p.add_argument("--batch", type=int, default=2000, help="events per append_many when generating")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
