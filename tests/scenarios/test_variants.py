"""A/B variants through the engine: ManualClock, the real SMTP sink, stats per variant, auto-winner."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

from sqlalchemy import text

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink

SUBJECTS = {"A": "Alpha {{first_name}}", "B": "Beta {{first_name}}"}


async def _campaign(eng: CampaignEngine, sink: SmtpSink, contacts: int, *, winner: dict[str, Any] | None = None,
                    steps: int = 1) -> tuple[str, str]:
    ws = (await eng.create_workspace("acme", monthly_limit=100_000)).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 500,
                                        "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp{i % 3}.io", "first_name": f"P{i}"}))["id"]
           for i in range(contacts)]
    first = {"subject": "Default", "body_html": "<p>Shared body</p>", "winner": winner,
             "variants": [{"subject": SUBJECTS["A"]}, {"subject": SUBJECTS["B"], "body_html": "<p>Beta body</p>"}]}
    follow_ups = [{"body_html": f"<p>Follow-up {n}</p>", "delay": {"days": 1}} for n in range(2, steps + 1)]
    cmp = await eng.create_campaign(ws, {
        "name": "AB", "sender_ids": [sid], "steps": [first, *follow_ups], "settings": {"track_opens": True},
        "schedule": {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                     "start_time": "00:00", "end_time": "23:59", "min_wait_seconds": 60, "max_wait_seconds": 60}})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"]


def _parts(raw: bytes) -> tuple[str, str, str]:
    """(subject, HTML body, open-pixel token) of one received message."""
    msg = message_from_bytes(raw, policy=policy.default)
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    token = re.findall(r'<img src="https://track\.example\.com/t/o/([^"]+)"', html)
    return str(msg["Subject"]), html, token[0] if token else ""


async def test_each_enrollment_gets_one_seeded_variant_and_stats_count_them(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, cid = await _campaign(eng, sink, contacts=16, steps=2)
    for _ in range(200):
        report = await eng.tick()
        if report.next_due_at is None:
            break
        clock.set(report.next_due_at)
    received = [_parts(m.data) for m in sink.messages]
    assert len(received) == 32
    firsts = [(subject, html) for subject, html, _ in received if not subject.startswith("Re: ")]
    kinds = Counter(subject.split()[0] for subject, _ in firsts)
    assert set(kinds) == {"Alpha", "Beta"} and sum(kinds.values()) == 16  # both variants reach the sink
    for subject, html in firsts:  # a variant's own body, else the step's
        assert ("Beta body" in html) == subject.startswith("Beta") and "Default" not in subject
    # a same-thread follow-up answers the subject its own enrollment's first email had
    follow_up_subjects = Counter(subject.removeprefix("Re: ").split()[0] for subject, _, _ in received
                                 if subject.startswith("Re: "))
    assert follow_up_subjects == kinds

    sent = (await eng.list_events(ws, limit=1000, type="email.sent"))["data"]
    by_email = {e["data"]["email_id"]: e["data"]["variant"] for e in sent}
    assert Counter(v for k, v in by_email.items() if k.endswith(".1")) == {"A": kinds["Alpha"], "B": kinds["Beta"]}
    assert {v for k, v in by_email.items() if k.endswith(".2")} == {None}  # step 2 has no variants

    # the preview for an enrolled contact shows the variant its email got, and lists every variant
    contact_id = sent[0]["data"]["contact_id"]
    [shown] = (await eng.preview(ws, cid, contact_id=contact_id, step=1))["steps"]
    assert shown["variant"] == by_email[sent[0]["data"]["email_id"]]
    assert shown["subject"].startswith("Alpha" if shown["variant"] == "A" else "Beta")
    assert [v["variant"] for v in shown["variants"]] == ["A", "B"]

    step1, step2 = await eng.campaign_step_stats(ws, cid)
    assert [(v["variant"], v["sent"], v["winner"]) for v in step1["variants"]] == [
        ("A", kinds["Alpha"], False), ("B", kinds["Beta"], False)]
    assert step2["variants"] == []


async def test_auto_winner_gets_every_later_email(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, cid = await _campaign(eng, sink, contacts=12, winner={"metric": "open_rate", "after_sends": 4})
    seen = 0
    order: list[str] = []
    for _ in range(100):
        report = await eng.tick()
        for raw in [m.data for m in sink.messages[seen:]]:
            subject, _, token = _parts(raw)
            order.append(subject.split()[0])
            if subject.startswith("Beta"):  # only Beta's emails are opened
                assert await eng.track_open(token, "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0")
        seen = len(sink.messages)
        if report.next_due_at is None:
            break
        clock.set(report.next_due_at + timedelta(seconds=1))
    assert len(order) == 12
    # Decided as the 4th email is recorded, before anyone could open it: by the opens of the first
    # three (only Beta's are opened); a tie at 0 % goes to the variant listed first.
    expected = "B" if "Beta" in order[:3] else "A"
    won = (await eng.list_events(ws, limit=100, type="campaign.variant_won"))["data"]
    assert [(e["data"]["step"], e["data"]["variant"], e["data"]["metric"]) for e in won] == [
        (1, expected, "open_rate")]
    assert set(order[4:]) == {"Beta" if expected == "B" else "Alpha"}  # every later email is the winner's
    [step] = await eng.campaign_step_stats(ws, cid)
    assert {v["variant"]: v["winner"] for v in step["variants"]} == {"A": expected == "A", "B": expected == "B"}
    assert sum(v["sent"] for v in step["variants"]) == 12
    beta = next(v for v in step["variants"] if v["variant"] == "B")
    assert beta["opened"] == beta["sent"] and beta["open_rate"] == (100.0 if beta["sent"] else 0.0)


async def test_a_database_made_before_variants_is_rebuilt_in_shape(sqlite_url: str, clock: ManualClock,
                                                                   sink: SmtpSink) -> None:
    """rm_emails without ``variant`` and send_queue at version 4: opening the database recreates the
    table and rebuilds it from the log, variants included, with its indexes."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        ws, cid = await _campaign(engine, sink, contacts=4)
        for _ in range(10):
            report = await engine.tick()
            if report.next_due_at is None:
                break
            clock.set(report.next_due_at)
        before = await engine.campaign_step_stats(ws, cid)
        async with engine.store.write_engine.begin() as conn:
            await conn.execute(text("ALTER TABLE rm_emails DROP COLUMN variant"))
            await conn.execute(text("UPDATE projection_state SET version = 4 WHERE name = 'send_queue'"))
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        after = await engine.campaign_step_stats(ws, cid)
        assert after == before and sum(v["sent"] for v in after[0]["variants"]) == 4
        async with engine.store.write_engine.begin() as conn:
            indexes = {row[1] for row in await conn.execute(text("PRAGMA index_list('rm_emails')"))}
        assert "ix_rm_emails_queue" in indexes
