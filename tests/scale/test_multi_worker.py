"""Several machines: three ``campaign-engine worker`` processes on one PostgreSQL database.

5,000 contacts in twenty campaigns share two senders whose daily limits (2,200 each) bind: 4,400
emails go today, the other 600 wait. A tick sends at most one email per (campaign, sender) pair,
so twenty campaigns give forty sends a tick to spread over the workers. The workers claim under
the log's lock, so whatever the interleaving, the sink must receive every email exactly once, no
sender may pass its limit, the log must verify, and a rebuild from position 0 must give exactly
the read models built inline. Nodes starting at the same moment must not trip over each other.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import CampaignEngine
from projections.sending import emails
from tests.conftest import pg_database
from tests.delivery.smtp_server import SmtpSink
from tests.scale.helpers import (
    SECRET,
    Worker,
    audit_verify,
    build,
    email_statuses,
    read_log,
    snapshot,
    stop_all,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONTACTS = 5000
SENDERS = 2
CAMPAIGNS = 20
DAILY_LIMIT = 2200
WORKERS = 3


async def test_three_workers_share_the_work_without_double_sends_or_overshoot(tmp_path: Path) -> None:
    workers: list[Worker] = []
    async with pg_database() as url:
        with SmtpSink() as sink:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                fleet = await build(engine, sink.host, sink.port, contacts=CONTACTS, senders=SENDERS,
                                    campaigns=CAMPAIGNS, daily_limit=DAILY_LIMIT)
                allowed = SENDERS * DAILY_LIMIT
                try:
                    workers = [Worker(url, tmp_path / f"worker{i}.log") for i in range(WORKERS)]

                    async def limits_reached() -> bool:
                        for w in workers:
                            assert w.running(), w.output()[-3000:]
                        statuses = await email_statuses(engine)
                        return statuses["sent"] >= allowed and not statuses["claimed"]

                    await wait_until(limits_reached, limit=240, what=f"{allowed} emails sent", workers=workers,
                                     interval=0.5)
                    for w in workers:  # SIGTERM: each finishes its tick in flight and exits cleanly
                        w.signal(signal.SIGTERM)
                    for w in workers:
                        assert w.wait(60) == 0, w.output()[-3000:]
                finally:
                    stop_all(workers)

                # every worker took part (the lock serialised their claims, not their work); a worker's
                # output is not a terminal, so its log lines are JSON
                claimed_by = [sum(int(n) for n in re.findall(r'"claimed": ?(\d+)', w.output())) for w in workers]
                assert all(claimed_by) and sum(claimed_by) == allowed, claimed_by

                # the sink got every email exactly once, and each sender only up to its limit
                messages = sink.messages
                ids = Counter(m.message_id for m in messages)
                assert len(messages) == allowed and len(ids) == allowed and max(ids.values()) == 1
                per_from = Counter(m.mail_from for m in messages)
                assert per_from == {fleet.sender_emails[s]: DAILY_LIMIT for s in fleet.sender_ids}

                # the read models agree: limits hold per sender and UTC day, the rest waits scheduled
                async with engine.store.reading() as conn:
                    rows = (await conn.execute(select(emails.c.sender_id, emails.c.claimed_at, emails.c.status)
                                               .where(emails.c.claimed_at.is_not(None)))).all()
                per_day = Counter((r[0], r[1][:10]) for r in rows)
                assert max(per_day.values()) <= DAILY_LIMIT
                assert {r[2] for r in rows} == {"sent"}
                statuses = await email_statuses(engine)
                if len({day for _s, day in per_day}) == 1:  # one UTC day (a run across midnight gets a new quota)
                    assert statuses == {"sent": allowed, "scheduled": CONTACTS - allowed}

                # the log: no hole, one claim and one outcome per email, nothing sent twice
                facts = await read_log(engine, [m.message_id for m in messages])
                assert facts.problems == []
                assert facts.by_type["email.claimed"] == facts.by_type["email.sent"] == allowed

                # a rebuild from position 0 gives exactly the read models that were built inline
                inline = await snapshot(engine)
                assert await engine.projector.rebuild(engine.store) == facts.events
                assert await snapshot(engine) == inline
            result = audit_verify(url)
            assert result.returncode == 0, result.stdout + result.stderr


async def test_nodes_starting_together_create_the_schema_in_turn() -> None:
    """Six nodes open one database at the same moment, fresh and then existing: none may fail.

    Without the schema lock, concurrent ``CREATE TABLE`` / ``CREATE OR REPLACE FUNCTION`` fail with
    "duplicate key value violates unique constraint pg_type_typname_nsp_index" or "tuple
    concurrently updated", and a worker dies at start-up (seen with three workers started at once).
    """
    async with pg_database() as url:
        for _round in ("fresh", "existing"):
            engines = [CampaignEngine(url, secret_key=SECRET) for _ in range(6)]
            opened = await asyncio.gather(*(e.open() for e in engines), return_exceptions=True)
            for e, result in zip(engines, opened, strict=True):
                if isinstance(result, CampaignEngine):
                    await e.close()
                elif hasattr(e, "store"):
                    await e.store.close()
            assert [r for r in opened if not isinstance(r, CampaignEngine)] == []
        async with CampaignEngine(url, secret_key=SECRET) as engine:
            assert await engine.create_workspace("after")
