"""Crash safety with real processes: ``campaign-engine worker`` on PostgreSQL against an aiosmtpd sink.

A worker is killed with SIGKILL at random moments and restarted (with a 1 s lease), stopped with
SIGTERM mid-tick, has its database connections terminated under it, and meets a misbehaving SMTP
server. Whatever happens, the log must show: no Message-ID received twice, no hole in the
positions (and ``audit verify`` passes), every claim followed by an outcome, nothing claimed or
sent again after ``email.uncertain``, and SIGTERM leaving no claim to expire as uncertain.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from engine import CampaignEngine
from projections import tables as t
from tests.conftest import PG_DSN, pg_database
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink
from tests.scale.helpers import (
    ALWAYS_OPEN,
    SECRET,
    Worker,
    audit_verify,
    build,
    claims_made,
    email_statuses,
    read_log,
    stop_all,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SIGKILL_TRIALS = 20
MIN_SIGKILLS = 8
SIGTERM_TRIALS = 5


async def finished(engine: CampaignEngine) -> bool:
    """Every email has an outcome: none waits scheduled, none is claimed."""
    statuses = await email_statuses(engine)
    return not statuses["scheduled"] and not statuses["claimed"]


async def enrollments_open(engine: CampaignEngine) -> int:
    async with engine.store.reading() as conn:
        return int((await conn.execute(select(func.count()).select_from(t.enrollments).where(
            t.enrollments.c.status.in_(["pending", "in_progress"])))).scalar() or 0)


async def start_sending(worker: Worker, engine: CampaignEngine, before: int) -> None:
    """Wait until ``worker`` has claimed something (it is past start-up and in the middle of sending)."""
    async def claimed() -> bool:
        if not worker.running():
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.output()[-3000:]}")
        return await claims_made(engine) > before

    await wait_until(claimed, limit=60, what="the worker's first claim", workers=[worker], interval=0.02)


async def test_sigkill_and_sigterm_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(20260105)
    workers: list[Worker] = []
    async with pg_database() as url:
        with SmtpSink() as sink:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                fleet = await build(engine, sink.host, sink.port, contacts=600, senders=3, campaigns=3, steps=2)
                try:
                    # SIGKILL: the claims of the tick in flight never get an outcome from this worker;
                    # the next worker finds their leases (1 s) expired and records them as uncertain.
                    # How fast the workers send is not the test's business: each phase stops early
                    # rather than run out of work (a worker with nothing to claim never "starts").
                    async def remaining() -> int:  # each email is claimed once (none is deferred here)
                        return fleet.emails_total - await claims_made(engine)

                    kills = 0
                    for trial in range(SIGKILL_TRIALS):
                        if trial >= MIN_SIGKILLS and await remaining() < fleet.emails_total * 0.6:
                            break
                        kills += 1
                        w = Worker(url, tmp_path / f"kill{trial}.log", lease_seconds=1, claim_batch=4)
                        workers.append(w)
                        await start_sending(w, engine, await claims_made(engine))
                        await asyncio.sleep(rng.uniform(0.05, 0.6))  # a random moment of sending
                        assert w.kill() == -signal.SIGKILL
                    killed = await read_log(engine, [m.message_id for m in sink.messages])
                    assert killed.by_type["email.sent"] < fleet.emails_total  # work is left for what follows

                    # SIGTERM: the worker finishes the tick in flight, so every claim it made has an
                    # outcome and none of them can expire into uncertain.
                    terms = 0
                    for trial in range(SIGTERM_TRIALS):
                        if await remaining() < 100:
                            break
                        terms += 1
                        start = await engine.store.last_position()
                        w = Worker(url, tmp_path / f"term{trial}.log", lease_seconds=1, claim_batch=4)
                        workers.append(w)
                        await start_sending(w, engine, await claims_made(engine))
                        await asyncio.sleep(rng.uniform(0.05, 0.6))
                        w.signal(signal.SIGTERM)
                        assert w.wait(60) == 0, w.output()[-3000:]
                        mine = await engine.store.read_all(start, 100_000, types=["email.claimed", *OUTCOME_TYPES])
                        claimed_here = {e.event.email_id for e in mine if e.type == "email.claimed"}  # type: ignore[attr-defined]
                        outcome_here = Counter(e.event.email_id for e in mine if e.type != "email.claimed")  # type: ignore[attr-defined]
                        assert claimed_here and all(outcome_here[eid] for eid in claimed_here)
                        assert not [e for e in mine if e.type == "email.uncertain"
                                    and e.event.email_id in claimed_here]  # type: ignore[attr-defined]

                    assert kills >= MIN_SIGKILLS and terms >= 2, (kills, terms)

                    # one last worker sends the rest
                    w = Worker(url, tmp_path / "drain.log", lease_seconds=1)
                    workers.append(w)
                    await wait_until(lambda: finished(engine), limit=180, what="every email to have an outcome",
                                     workers=[w])
                    w.signal(signal.SIGTERM)
                    assert w.wait(60) == 0, w.output()[-3000:]
                finally:
                    stop_all(workers)

                received = [m.message_id for m in sink.messages]
                facts = await read_log(engine, received)
                assert facts.problems == []
                assert facts.by_type["email.uncertain"] >= 1  # some kill did land between a claim and its outcome
                assert facts.by_type["email.sent"] + facts.by_type["email.uncertain"] == fleet.emails_total
                assert not facts.by_type["email.deferred"] and not facts.by_type["email.failed"]
                # an uncertain email may or may not have reached the server, but never twice
                uncertain = [eid for eid, ty in facts.final.items() if ty == "email.uncertain"]
                assert len(uncertain) == facts.by_type["email.uncertain"]
                assert len(received) == len(set(received)) <= fleet.emails_total
                # the sequence goes on after an uncertain email, so no enrollment is left hanging
                assert await enrollments_open(engine) == 0
                statuses = {c["status"] for c in [await engine.get_campaign(fleet.workspace_id, cid)
                                                  for cid in fleet.campaign_ids]}
                assert statuses == {"completed"}
            result = audit_verify(url)
            assert result.returncode == 0, result.stdout + result.stderr


OUTCOME_TYPES = ["email.sent", "email.deferred", "email.failed", "email.bounced", "email.uncertain", "email.released"]


async def terminate_backends(database: str) -> int:
    """Kill every connection to ``database`` (the workers' and this test's pooled ones) from outside."""
    admin = await asyncpg.connect(PG_DSN)
    try:
        rows = await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    finally:
        await admin.close()
    return len(rows)


async def test_database_connections_killed_while_sending(tmp_path: Path) -> None:
    """The worker's connections are terminated mid-send, six times, and once more while it idles.

    Its safety interval is an hour, so it must get going again by itself: a failed tick is retried
    within seconds, a delivery's database work is retried on a fresh connection, and the LISTEN
    connection is re-established (new work from another node still wakes it).
    """
    rng = random.Random(7)
    workers: list[Worker] = []
    async with pg_database() as url:
        database = url.rsplit("/", 1)[1]
        with SmtpSink() as sink:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                fleet = await build(engine, sink.host, sink.port, contacts=500, senders=3, campaigns=3, steps=1)
                try:
                    w = Worker(url, tmp_path / "worker.log", lease_seconds=60, safety_seconds=3600, claim_batch=20)
                    workers.append(w)
                    terminated = 0
                    for _ in range(6):
                        await start_sending(w, engine, await claims_made(engine))
                        await asyncio.sleep(rng.uniform(0.05, 0.5))
                        terminated += await terminate_backends(database)
                        assert w.running(), w.output()[-3000:]
                    assert terminated >= 6
                    await wait_until(lambda: finished(engine), limit=120, what="every email to have an outcome",
                                     workers=[w])
                    # idle now; kill its connections again, then create work from this process (another node)
                    await terminate_backends(database)
                    late = await engine.import_contacts(fleet.workspace_id, [{"email": f"late{i}@corp.io"}
                                                                             for i in range(20)])
                    assert late["created"] == 20
                    ids = [c["id"] for c in (await engine.list_contacts(fleet.workspace_id, q="late",
                                                                        per_page=100))["data"]]
                    late_cmp = await engine.create_campaign(fleet.workspace_id, {
                        "name": "late", "sender_ids": fleet.sender_ids, "schedule": ALWAYS_OPEN,
                        "steps": [{"subject": "Late", "body_html": "<p>late</p>"}]})
                    await engine.enroll(fleet.workspace_id, late_cmp["id"], {"contact_ids": ids})
                    await engine.launch_campaign(fleet.workspace_id, late_cmp["id"])
                    await wait_until(lambda: finished(engine), limit=60, what="the late contacts' emails",
                                     workers=[w])
                    assert w.running()
                    w.signal(signal.SIGTERM)
                    assert w.wait(60) == 0, w.output()[-3000:]
                finally:
                    stop_all(workers)
                received = [m.message_id for m in sink.messages]
                facts = await read_log(engine, received)
                assert facts.problems == []
                # nothing lost: every email was sent, exactly once, none left uncertain
                total = fleet.emails_total + 20
                assert facts.by_type["email.sent"] == total == len(received) == len(set(received))
                assert not facts.by_type["email.uncertain"]
                out = w.output()
                assert "database_retry" in out or "tick_failed" in out  # the kills did hit the worker
            result = audit_verify(url)
            assert result.returncode == 0, result.stdout + result.stderr


async def test_smtp_faults_in_a_worker_process(tmp_path: Path) -> None:
    """Each sender's server misbehaves its own way; one worker process meets them all."""
    behaviours = {
        "refuses": SinkBehaviour(connect_reply="421 4.3.2 too busy"),
        "stalls": SinkBehaviour(stall_at="data", stall_seconds=20),  # past --smtp-timeout 1
        "drops": SinkBehaviour(drop_after_data=True),
        "picky": SinkBehaviour(rcpt_replies={"c9@corp9.io": "550 5.1.1 no such user",
                                             "c10@corp10.io": "451 4.3.0 try later"}),
    }
    sinks = {name: SmtpSink(behaviour=b).start() for name, b in behaviours.items()}
    workers: list[Worker] = []
    try:
        async with pg_database() as url:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                ws = (await engine.create_workspace("faults")).id
                rows = [{"email": f"c{i}@corp{i}.io"} for i in range(12)]
                await engine.import_contacts(ws, rows)
                contacts = {r["email"]: r["id"] for r in (await engine.list_contacts(ws, per_page=100))["data"]}
                names = list(sinks)
                for k, name in enumerate(names):
                    sink = sinks[name]
                    sid = (await engine.create_sender(ws, {"email": f"{name}@sender.io", "daily_limit": 100, "smtp": {
                        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
                    cmp = await engine.create_campaign(ws, {"name": name, "sender_ids": [sid], "schedule": ALWAYS_OPEN,
                                                            "steps": [{"subject": "s", "body_html": "b"}]})
                    mine = [contacts[f"c{i}@corp{i}.io"] for i in range(k * 3, k * 3 + 3)]
                    await engine.enroll(ws, cmp["id"], {"contact_ids": mine})
                    await engine.launch_campaign(ws, cmp["id"])
                w = Worker(url, tmp_path / "worker.log", lease_seconds=60, smtp_timeout=1)
                workers.append(w)

                async def settled() -> bool:
                    s = await email_statuses(engine)
                    return not s["claimed"] and s["scheduled"] == 4  # 3 refused at connect + 1 451, waiting to retry

                await wait_until(settled, limit=120, what="every first attempt to have an outcome", workers=[w])
                w.signal(signal.SIGTERM)
                assert w.wait(60) == 0, w.output()[-3000:]
                received = [m.message_id for s in sinks.values() for m in s.messages]
                facts = await read_log(engine, received)
                assert facts.problems == []
                finals = Counter(facts.final.values())
                assert finals == {"email.deferred": 4, "email.uncertain": 6, "email.bounced": 1, "email.sent": 1}
                assert len(sinks["drops"].messages) == 3 and not sinks["stalls"].messages
                assert [m.rcpt_tos for m in sinks["picky"].messages] == [("c11@corp11.io",)]
            assert audit_verify(url).returncode == 0
    finally:
        stop_all(workers)
        for s in sinks.values():
            s.stop()


async def test_dead_workers_claims_resolve_within_a_minute_not_at_lease_end(tmp_path: Path) -> None:
    """A worker holding claims under a 10-minute lease is killed mid-send; a second worker records
    them uncertain once the first one's heartbeat is 30 s old, and finishes the campaign: well
    within 60 s of the kill, not when the lease runs out."""
    workers: list[Worker] = []
    async with pg_database() as url:
        with SmtpSink(behaviour=SinkBehaviour(stall_at="mail", stall_seconds=0.05)) as sink:
            async with CampaignEngine(url, secret_key=SECRET) as engine:
                fleet = await build(engine, sink.host, sink.port, contacts=300, senders=2, campaigns=1, steps=1)
                try:
                    first = Worker(url, tmp_path / "first.log", lease_seconds=600, claim_batch=40)
                    workers.append(first)
                    await start_sending(first, engine, 0)
                    await asyncio.sleep(0.1)
                    assert first.kill() == -signal.SIGKILL
                    killed_at = time.monotonic()
                    statuses = await email_statuses(engine)
                    assert statuses["claimed"] >= 1  # it died holding claims
                    second = Worker(url, tmp_path / "second.log", lease_seconds=600, claim_batch=40)
                    workers.append(second)
                    await wait_until(lambda: finished(engine), limit=90, what="every email to have an outcome",
                                     workers=[second])
                    assert time.monotonic() - killed_at < 60
                    second.signal(signal.SIGTERM)
                    assert second.wait(60) == 0, second.output()[-3000:]
                finally:
                    stop_all(workers)
                facts = await read_log(engine, [m.message_id for m in sink.messages])
                assert facts.problems == []
                assert facts.by_type["email.uncertain"] >= 1
                assert facts.by_type["email.sent"] + facts.by_type["email.uncertain"] == fleet.emails_total
