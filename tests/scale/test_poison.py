"""Poison messages: an email whose building kills the worker process every time.

Given a campaign of 12 contacts, one of whom (c5) kills any process that builds their email,
when three worker processes in turn tick and die on it (each 40 s after the last, past the 30 s
after which a silent worker counts as dead), and the engine then ticks once more,
then c5's email is quarantined after exactly three deaths (``email.quarantined``, in the activity
feed and the stats), c5's enrollment stops with reason ``quarantined``, every other contact got
exactly one email, and no claim was ever recorded uncertain: each death happened before SMTP.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from projections import tables
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink
from tests.scale.helpers import ROOT, build, cli_env, email_statuses
from tests.scale.poison_worker import POISONED

POISON = "c5@corp5.io"


def worker_dies(url: str, at: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.scale.poison_worker", url, at, POISON], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == POISONED, done.stdout[-2000:] + done.stderr[-2000:]


async def test_a_poison_message_is_quarantined_after_three_deaths_and_the_rest_is_sent(
        sqlite_url: str, clock: ManualClock) -> None:
    with SmtpSink() as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, claim_batch=4) as engine:
            fleet = await build(engine, sink.host, sink.port, contacts=12, senders=1, campaigns=1)
            start = clock.now()
            for death in range(3):
                worker_dies(sqlite_url, (start + timedelta(seconds=40 * death)).isoformat())
            before_recovery = {message.rcpt_tos[0] for message in sink.messages}

            clock.set(start + timedelta(seconds=120))
            while (await engine.tick()).next_due_at == clock.now():
                pass

            received = Counter(message.rcpt_tos[0] for message in sink.messages)
            assert POISON not in received
            assert set(received) == {f"c{i}@corp{i}.io" for i in range(12)} - {POISON}
            assert set(received.values()) == {1}, received

            statuses = await email_statuses(engine)
            assert statuses["quarantined"] == 1 and statuses["sent"] == 11 and not statuses["uncertain"]
            async with engine.store.reading() as conn:
                contact_id = (await conn.execute(select(tables.contacts.c.id).where(
                    tables.contacts.c.email == POISON))).scalar_one()
                enrollment = (await conn.execute(select(tables.enrollments).where(
                    tables.enrollments.c.contact_id == contact_id))).mappings().one()
            assert enrollment["status"] == "stopped" and enrollment["stop_reason"] == "quarantined"

            history = await engine.store.read_all(limit=100_000)
            quarantined = [e for e in history if e.type == "email.quarantined"]
            assert len(quarantined) == 1 and quarantined[0].event.deaths == 3  # type: ignore[attr-defined]
            assert not [e for e in history if e.type == "email.uncertain"]
            died = [e for e in history if e.type == "email.released" and e.event.reason == "worker_died"]  # type: ignore[attr-defined]
            assert died, "the poison's batch-mates went back to the queue"
            # ...and did not wait for the poison to be named: suspects with fewer deaths go first, so
            # the workers that died on the poison had sent every batch-mate of it by then
            async with engine.store.reading() as conn:
                address_of = dict((await conn.execute(select(tables.contacts.c.id, tables.contacts.c.email))).all())
            mates = {address_of[e.event.contact_id] for e in died} - {POISON}  # type: ignore[attr-defined]
            assert mates and mates <= before_recovery, (mates, before_recovery)

            activity = await engine.campaign_activity(fleet.workspace_id, fleet.campaign_ids[0], limit=200)
            assert any(item["type"] == "email.quarantined" for item in activity["data"]), activity
            stats = await engine.campaign_stats(fleet.workspace_id, fleet.campaign_ids[0])
            assert stats["emails"]["quarantined"] == 1, stats["emails"]
