"""Property: campaign stats kept as counters equal a recount of the rows, and a rebuild gives the same counters.

Given a random history of enrollment and email events (in any order the log could hold, the odd
ones too: a bounce after a send, a deferral of a first step, a reply out of office, a prefetch),
appended in random groups while the engine clock moves on, when the stats are read from the
counters (``projections/campaign_stats.py``), then every figure equals what the grouped queries
over ``rm_emails``, ``rm_enrollments`` and ``rm_skips`` count (the queries the stats ran before
the counters, kept here as the reference), and a rebuild from position 0 gives the same rows.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, case, func, literal, select, union_all

from engine import CampaignEngine, ManualClock
from engine.domain import enrollment as ed
from events.catalog import contact as contact_events
from events.catalog import email as em
from events.catalog import enrollment as en
from events.registry import Event, format_time
from events.store import AppendBatch
from projections import campaign_stats as cs
from projections import tables as t
from projections.engagement import opens
from projections.sending import emails
from tests.conftest import throwaway_database

E = emails.c
ENROLLMENTS = 6  # enrollment i is in campaign i % 2, of contact i // 2; each has emails of steps 1 and 2
SENDERS = ("snd_a", "snd_b")
KINDS = ["enroll", "schedule", "claim", "sent", "defer", "release", "fail", "uncertain", "quarantine", "cancel",
         "bounce", "open", "click", "reply", "complain", "unsubscribe", "skip", "complete", "remove", "stop",
         "advance", "schedule", "claim", "sent", "sent"]
ADVANCES = [timedelta(minutes=30), timedelta(hours=1), timedelta(minutes=59, seconds=50), timedelta(minutes=61),
            timedelta(days=1), None, timedelta(hours=23, minutes=59, seconds=50), timedelta(minutes=7),
            timedelta(days=1, minutes=5), timedelta(seconds=40), timedelta(minutes=58, seconds=47),
            None]  # None: the param of a move to the next whole hour
Op = tuple[str, int, int]  # (kind, which email or enrollment, a free parameter)


# -- the reference: today's grouped queries over the rows ---------------------------------------
def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


async def _rows(engine: CampaignEngine, q: Any) -> list[dict[str, Any]]:
    async with engine.store.reading() as conn:
        return [dict(r) for r in (await conn.execute(q)).mappings().all()]


async def recount(engine: CampaignEngine, ws: str, cids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``GET .../stats`` of each campaign counted over the rows, as the stats did before counters."""
    now = engine.clock.now()
    hour_ago, day_ago, until = (format_time(now - timedelta(hours=1)), format_time(now - timedelta(days=1)),
                                format_time(now))
    sent_col = E.sent_at.is_not(None)
    counted = {r["campaign_id"]: {k: int(v) for k, v in r.items() if k != "campaign_id"} for r in await _rows(
        engine, select(
            E.campaign_id, func.count().label("total"),
            _count(E.status == "scheduled").label("scheduled"), _count(E.status == "claimed").label("claimed"),
            _count(sent_col).label("sent"),
            _count(E.last_message.is_not(None) & (E.status == "scheduled")).label("deferred"),
            _count(E.status == "failed").label("failed"), _count(E.status == "bounced").label("bounced"),
            _count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"),
            _count(E.status == "cancelled").label("cancelled"), _count(E.status == "uncertain").label("uncertain"),
            _count(E.status == "quarantined").label("quarantined"),
            _count(E.bounce_type == "hard").label("hard"), _count(E.bounce_type == "soft").label("soft"),
            _count(E.bounce_type == "block").label("block"),
            _count(E.opened_at.is_not(None)).label("opened"), _count(E.clicked_at.is_not(None)).label("clicked"),
            _count(E.replied_at.is_not(None)).label("replied"),
            _count(E.unsubscribed_at.is_not(None) | E.complained_at.is_not(None)).label("unsubscribed"),
            _count(E.complained_at.is_not(None)).label("complained"),
            _count(E.out_of_office.is_(True)).label("out_of_office"),
            func.count(func.distinct(case((sent_col, E.contact_id), else_=None))).label("contacted"),
            _count(sent_col & (E.sent_at >= hour_ago) & (E.sent_at <= until)).label("last_hour"),
            _count(sent_col & (E.sent_at >= day_ago) & (E.sent_at <= until)).label("last_day"),
        ).where(E.campaign_id.in_(list(cids)), E.workspace_id == ws).group_by(E.campaign_id))}
    opens_total = {r["campaign_id"]: int(r["n"]) for r in await _rows(engine, select(
        opens.c.campaign_id, func.sum(opens.c.opens).label("n")).where(opens.c.campaign_id.in_(list(cids)))
        .group_by(opens.c.campaign_id))}
    senders: dict[str, list[dict[str, Any]]] = {}
    for row in await _rows(engine, select(
            E.campaign_id, E.sender_id, _count(sent_col).label("sent"), _count(E.status == "bounced").label("bounced"),
            _count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"),
            _count(E.complained_at.is_not(None)).label("complained"),
            _count(sent_col & (E.sent_at >= hour_ago) & (E.sent_at <= until)).label("last_hour"),
            _count(sent_col & (E.sent_at >= day_ago) & (E.sent_at <= until)).label("last_day"))
            .where(E.campaign_id.in_(list(cids)), E.workspace_id == ws, E.sender_id.is_not(None))
            .group_by(E.campaign_id, E.sender_id).order_by(E.campaign_id, E.sender_id)):
        sent, bounced, complained = int(row["sent"]), int(row["bounced"]), int(row["complained"])
        senders.setdefault(row["campaign_id"], []).append({
            "sender_id": row["sender_id"], "sent": sent, "bounced": bounced,
            "bounce_rate": _pct(bounced, sent + int(row["refused"])), "status": "removed",
            "complained": complained, "complaint_rate": _pct(complained, sent),
            "throughput": {"last_hour": float(int(row["last_hour"])), "last_day": round(int(row["last_day"]) / 24, 2)}})
    e = t.enrollments.c
    by_status: dict[str, dict[str, int]] = {cid: {} for cid in cids}
    for r in await _rows(engine, select(e.campaign_id, e.status, func.count().label("n"))
                         .where(e.campaign_id.in_(list(cids)), e.workspace_id == ws).group_by(e.campaign_id, e.status)):
        by_status[r["campaign_id"]][r["status"]] = int(r["n"])
    s = t.skips.c
    skips: dict[str, dict[str, int]] = {cid: {} for cid in cids}
    for r in await _rows(engine, select(s.campaign_id, s.reason, func.count().label("n"))
                         .where(s.campaign_id.in_(list(cids))).group_by(s.campaign_id, s.reason)):
        skips[r["campaign_id"]][r["reason"]] = int(r["n"])
    out = {}
    for cid in cids:
        n = counted.get(cid) or {k: 0 for k in (
            "total", "scheduled", "claimed", "sent", "deferred", "failed", "bounced", "refused", "cancelled",
            "uncertain", "quarantined", "hard", "soft", "block", "opened", "clicked", "replied", "unsubscribed",
            "complained", "out_of_office", "contacted", "last_hour", "last_day")}
        sent = n["sent"]
        contacts = {"total": sum(by_status[cid].values()),
                    **{k: by_status[cid].get(k, 0) for k in ("pending", "in_progress", "completed", "replied",
                                                             "bounced", "unsubscribed", "stopped", "skipped",
                                                             "failed")},
                    "contacted": n["contacted"]}
        out[cid] = {
            "contacts": contacts, "skipped": {k: skips[cid].get(k, 0) for k in ed.SKIP_REASONS},
            "emails": {"scheduled": n["scheduled"] + n["claimed"], "sent": sent, "deferred": n["deferred"],
                       "failed": n["failed"], "bounced": n["bounced"], "cancelled": n["cancelled"],
                       "uncertain": n["uncertain"], "quarantined": n["quarantined"],
                       "bounce_types": {"hard": n["hard"], "soft": n["soft"], "block": n["block"]},
                       "delivered": max(sent - n["bounced"], 0), "complained": n["complained"], "total": n["total"]},
            "engagement": {**{k: n[k] for k in ("opened", "clicked", "replied", "unsubscribed", "out_of_office")},
                           "opens_total": opens_total.get(cid, 0)},
            "rates": {"open_rate": _pct(n["opened"], sent), "click_rate": _pct(n["clicked"], sent),
                      "reply_rate": _pct(n["replied"], sent), "bounce_rate": _pct(n["bounced"], sent + n["refused"]),
                      "unsubscribe_rate": _pct(n["unsubscribed"], sent), "complaint_rate": _pct(n["complained"], sent)},
            "throughput": {"last_hour": float(n["last_hour"]), "last_day": round(n["last_day"] / 24, 2)},
            "senders": senders.get(cid, []),
        }
    return out


async def recount_steps(engine: CampaignEngine, cid: str) -> tuple[dict[int, dict[str, int]],
                                                                     dict[int, dict[str, dict[str, int]]]]:
    """``stats/steps``' counts per step and per (step, variant), grouped over ``rm_emails``."""
    figures = (_count(E.sent_at.is_not(None)).label("sent"), _count(E.opened_at.is_not(None)).label("opened"),
               _count(E.clicked_at.is_not(None)).label("clicked"), _count(E.replied_at.is_not(None)).label("replied"),
               _count(E.status == "bounced").label("bounced"),
               _count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"))
    steps = {int(r.pop("step")): {k: int(v) for k, v in r.items()}
             for r in await _rows(engine, select(E.step, *figures).where(E.campaign_id == cid).group_by(E.step))}
    variants: dict[int, dict[str, dict[str, int]]] = {}
    for r in await _rows(engine, select(E.step, E.variant, *figures).where(
            E.campaign_id == cid, E.variant.is_not(None)).group_by(E.step, E.variant)):
        step, variant = int(r.pop("step")), str(r.pop("variant"))
        variants.setdefault(step, {})[variant] = {k: int(v) for k, v in r.items()}
    return steps, variants


async def recount_minutes(engine: CampaignEngine, cid: str) -> dict[str, dict[str, int]]:
    """The timeline's per-minute counts over ``rm_emails`` (minute -> metric -> count)."""
    metrics = {"sent": E.sent_at, "opened": E.opened_at, "clicked": E.clicked_at, "replied": E.replied_at,
               "bounced": case((E.status == "bounced", E.updated_at), else_=None)}
    parts = []
    for name, col in metrics.items():
        minute = func.substr(col, 1, 16)
        parts.append(select(literal(name, String).label("metric"), minute.label("minute"), func.count().label("n"))
                     .where(E.campaign_id == cid, col.is_not(None)).group_by(minute))
    out: dict[str, dict[str, int]] = {}
    for r in await _rows(engine, union_all(*parts)):
        out.setdefault(r["minute"], dict.fromkeys(metrics, 0))[r["metric"]] = int(r["n"])
    return out


async def counter_tables(engine: CampaignEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.store.reading() as conn:
        return {table.name: [tuple(r) for r in (await conn.execute(
            select(table).order_by(*table.primary_key.columns))).all()] for table in cs.campaign_stats.tables}


# -- the histories ---------------------------------------------------------------------------------
def _event(kind: str, index: int, param: int, cids: list[str], now: datetime) -> Event | None:
    """The event of one op, or None for an op with nothing to say (``advance``)."""
    enrollment = index % ENROLLMENTS
    step = 1 + (index // ENROLLMENTS) % 2
    ids = {"enrollment_id": f"enr_{enrollment}", "campaign_id": cids[enrollment % 2],
           "contact_id": f"con_{enrollment // 2}"}
    mail = {**ids, "email_id": f"enr_{enrollment}.{step}", "step": step}
    sender = SENDERS[param % 2]
    variant = [None, "a", "b"][param % 3]
    if kind == "enroll":
        return en.EnrollmentCreated(**ids, batch_number=None, priority=0, seq=enrollment)
    if kind == "skip":
        return en.EnrollmentSkipped(campaign_id=ids["campaign_id"], contact_id=ids["contact_id"],
                                    reason=ed.SKIP_REASONS[param % len(ed.SKIP_REASONS)],
                                    enrollment_id=ids["enrollment_id"] if param % 2 else None)
    if kind == "complete":
        return en.EnrollmentCompleted(**ids)
    if kind == "remove":
        return en.EnrollmentRemoved(**ids)
    if kind == "stop":
        return en.EnrollmentStopped(**ids, reason="replied", status=["stopped", "replied", "bounced"][param % 3])
    if kind == "schedule":
        return em.EmailScheduled(**mail, due_at=now, sender_id=sender if param % 2 else None)
    if kind == "claim":
        return em.EmailClaimed(**mail, sender_id=sender, message_id=f"<m{index}>", lease_until=now)
    if kind == "sent":
        return em.EmailSent(**mail, sender_id=sender, message_id=f"<m{index}>", smtp_code=250, variant=variant)
    if kind == "defer":
        return em.EmailDeferred(**mail, sender_id=sender, code=451, message="try later", retry_at=now, attempt=1)
    if kind == "release":
        return em.EmailReleased(**mail, sender_id=sender, reason="worker_died", claimed_at=now, timezone="UTC")
    if kind == "fail":
        return em.EmailFailed(**mail, sender_id=None, code=None, message="no MX")
    if kind == "uncertain":
        return em.EmailUncertain(**mail, sender_id=sender, message="connection lost")
    if kind == "quarantine":
        return em.EmailQuarantined(**mail, sender_id=sender, reason="poison", deaths=3, claimed_at=now,
                                   timezone="UTC")
    if kind == "cancel":
        return em.EmailCancelled(**mail, reason="stopped")
    if kind == "bounce":
        return em.EmailBounced(**mail, sender_id=sender, bounce_type=["hard", "soft", "block"][param % 3],
                               reason="r", status="5.1.1", code=550, source=["smtp", "dsn"][param // 3 % 2],
                               variant=variant)
    if kind == "open":
        return em.EmailOpened(**mail, prefetch=param % 4 == 0)
    if kind == "click":
        return em.EmailClicked(**mail, url="https://x.io", link_index=0, prefetch=param % 4 == 0)
    if kind == "reply":
        return em.EmailReplied(**mail, out_of_office=param % 3 == 0, message_id=None)
    if kind == "complain":
        return em.EmailComplained(**mail, feedback_type="abuse")
    if kind == "unsubscribe":
        return contact_events.ContactUnsubscribed(contact_id=ids["contact_id"], reason="link",
                                                  campaign_id=ids["campaign_id"], email_id=mail["email_id"])
    assert kind == "advance"
    return None


def _advance(now: datetime, param: int) -> timedelta:
    """How far an ``advance`` moves the clock: to the next whole hour (reads and sends on an hour's
    edge), or by one of ADVANCES (sends just inside, on and just past a window's start)."""
    if param % 6 == 5:
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - now
    step = ADVANCES[param % len(ADVANCES)]
    assert step is not None
    return step


def _stream(event: Event) -> str:
    if isinstance(event, contact_events.ContactUnsubscribed):
        return f"contact-{event.contact_id}"
    enrollment_id = getattr(event, "enrollment_id", None)
    return f"enrollment-{enrollment_id}" if enrollment_id else f"campaign-{getattr(event, 'campaign_id', '')}"



async def run(groups: list[list[Op]], backend: str = "sqlite") -> dict[str, dict[str, Any]]:
    """Append the history (each group one append), then check counters against the recount and a
    rebuild; returns the stats, for the guard below."""
    async with throwaway_database(backend) as url:
        clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
        async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
            ws = (await engine.create_workspace("w")).id
            cids = [(await engine.create_campaign(ws, {"name": f"c{i}", "steps": [
                {"subject": "Hi", "body_html": "b"}, {"subject": "Again", "body_html": "c"}]}))["id"]
                for i in range(2)]
            created: set[str] = set()
            scheduled: set[str] = set()
            for group in groups:
                # A group is one append, and an ``advance`` inside it closes the append so far: the
                # events before it are recorded at the time before it.
                by_stream: dict[str, list[Event]] = {}
                moved = False
                for kind, index, param in [*group, ("flush", 0, 0)]:
                    if kind in ("advance", "flush"):
                        if by_stream:
                            await engine.store.append_many(
                                [AppendBatch(stream, evs) for stream, evs in by_stream.items()], workspace_id=ws)
                            by_stream = {}
                        if kind == "advance":
                            clock.advance(_advance(clock.now(), param))
                            moved = True
                        continue
                    event = _event(kind, index, param, cids, clock.now())
                    assert event is not None
                    # The read models refuse a second enrollment or a second first schedule of an email.
                    key = getattr(event, "email_id", None) if kind == "schedule" else \
                        getattr(event, "enrollment_id", None) if kind == "enroll" else None
                    seen = scheduled if kind == "schedule" else created
                    if key is not None:
                        if key in seen:
                            continue
                        seen.add(key)
                    by_stream.setdefault(_stream(event), []).append(event)  # one batch per stream, in order
                if not moved:
                    clock.advance(timedelta(seconds=13))
            stats = await engine.campaign_stats_many(ws, cids)
            assert stats == await recount(engine, ws, cids)
            service = engine._services.stats
            everything = ("1970-01-01T00:00:00.000000Z", "9999-01-01T00:00:00.000000Z")
            for cid in cids:
                assert await service.step_counts(cid) == await recount_steps(engine, cid)
                minutes = {r["minute"]: {k: r[k] for k in cs.TIMELINE_FIGURES}
                           for r in await service.timeline_minutes(cid, *everything)}
                assert minutes == await recount_minutes(engine, cid)
                first = await _rows(engine, select(func.min(E.sent_at).label("first")).where(E.campaign_id == cid))
                assert await service.first_sent_at(cid) == first[0]["first"]
            inline = await counter_tables(engine)
            await engine.rebuild_projections()
            assert await counter_tables(engine) == inline
            assert await engine.campaign_stats_many(ws, cids) == stats
            return stats


ops = st.tuples(st.sampled_from(KINDS), st.integers(0, 2 * ENROLLMENTS - 1), st.integers(0, 11))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Read exactly on an hour's start: the whole last hour is one hourly counter, not an edge range.
@example([[("enroll", 0, 0), ("schedule", 0, 1), ("claim", 0, 1), ("sent", 0, 1)], [("advance", 0, 5)]])
# A send exactly one hour before the read (the windows' first instant, 13 s past a minute), and one
# 59:50 before it at a half hour (the first whole minute of the window's partial hour).
@example([[("enroll", 0, 0)], [("schedule", 0, 1), ("claim", 0, 1), ("sent", 0, 1), ("advance", 0, 1)]])
@example([[("advance", 0, 0)], [("enroll", 0, 0), ("schedule", 0, 1), ("claim", 0, 1), ("sent", 0, 1),
                                ("advance", 0, 2)]])
@given(st.lists(st.lists(ops, min_size=1, max_size=6), min_size=1, max_size=25))
def test_counters_equal_a_recount_and_a_rebuild(groups: list[list[Op]]) -> None:
    asyncio.run(run(groups))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ops, min_size=1, max_size=6), min_size=1, max_size=25))
def test_counters_equal_a_recount_and_a_rebuild_on_postgresql(groups: list[list[Op]]) -> None:
    """The same on PostgreSQL (its upserts and batched inserts are other statements), fewer examples."""
    asyncio.run(run(groups, "postgres"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_property_reaches_every_kind_of_figure(backend: str) -> None:
    """Guard against a vacuous property: a fixed history moves the figures the counters keep."""
    history = [[("enroll", 0, 0), ("schedule", 0, 1), ("enroll", 2, 0), ("schedule", 2, 0)],
               [("claim", 0, 1), ("sent", 0, 1)], [("defer", 2, 0)], [("advance", 0, 0)],
               [("open", 0, 1), ("open", 0, 2), ("click", 0, 1), ("reply", 0, 1)],
               [("schedule", 6, 0), ("sent", 6, 2), ("bounce", 6, 3)], [("skip", 4, 1), ("complete", 0, 0)],
               [("unsubscribe", 0, 0)]]
    stats = asyncio.run(run(history, backend))
    first = next(iter(stats.values()))
    assert first["emails"]["sent"] == 2 and first["emails"]["bounced"] == 1 and first["emails"]["deferred"] == 1
    assert first["contacts"]["contacted"] == 1 and first["contacts"]["completed"] == 1
    assert first["engagement"]["opens_total"] == 2 and first["engagement"]["unsubscribed"] == 1
    assert first["throughput"]["last_hour"] == 2.0
    # Only a claim names an email's sender: the step-2 email was sent and bounced without one.
    assert [(s["sender_id"], s["sent"]) for s in first["senders"]] == [("snd_b", 1)]
    assert sum(first["skipped"].values()) == 1


def test_a_database_from_before_the_counters_gets_them_on_open() -> None:
    """Given a database whose history was written by code without the counters (their tables and
    their projection_state row absent), when an engine opens it, then the projection is rebuilt
    from the log and the stats are what they were."""
    history = [[("enroll", 0, 0), ("schedule", 0, 1), ("enroll", 1, 0), ("schedule", 1, 0)],
               [("claim", 0, 1), ("sent", 0, 1), ("sent", 1, 2)], [("open", 0, 1), ("bounce", 1, 3)]]

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as d:
            url = f"sqlite+aiosqlite:///{d}/old.db"
            clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
            async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
                ws = (await engine.create_workspace("w")).id
                cids = [(await engine.create_campaign(ws, {"name": f"c{i}", "steps": [
                    {"subject": "Hi", "body_html": "b"}]}))["id"] for i in range(2)]
                for group in history:
                    by_stream: dict[str, list[Event]] = {}
                    for kind, index, param in group:
                        event = _event(kind, index, param, cids, clock.now())
                        assert event is not None
                        by_stream.setdefault(_stream(event), []).append(event)
                    await engine.store.append_many([AppendBatch(s, evs) for s, evs in by_stream.items()],
                                                   workspace_id=ws)
                    clock.advance(timedelta(minutes=5))
                before = await engine.campaign_stats_many(ws, cids)
                assert before[cids[0]]["emails"]["sent"] == 1 and before[cids[1]]["emails"]["bounced"] == 1
                async with engine.store.write_engine.begin() as conn:
                    for table in cs.campaign_stats.tables:
                        await conn.exec_driver_sql(f"DROP TABLE {table.name}")
                    await conn.exec_driver_sql("DELETE FROM projection_state WHERE name = 'campaign_stats'")
            async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
                assert await engine.campaign_stats_many(ws, cids) == before
                assert await engine.campaign_stats_many(ws, cids) == await recount(engine, ws, cids)

    asyncio.run(scenario())
