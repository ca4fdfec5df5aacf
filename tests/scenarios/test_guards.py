"""Campaign guards and bounce consequences (issue 11, items 5 and 11), through the public engine API.

Synchronous refusals come from the real aiosmtpd sink (``rcpt_replies``), reports (DSN, ARF) from
a real Dovecot mailbox, on a ManualClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from engine import CampaignEngine, ManualClock
from engine.errors import ValidationFailed
from tests.conftest import SECRET
from tests.delivery.dovecot import Dovecot
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink
from tests.scenarios.test_inbound import dsn

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAY = {"start_time": "00:00", "end_time": "24:00", "days": EVERY_DAY, "every_minutes": 1}
USER_UNKNOWN = "550 5.1.1 User unknown"
MAILBOX_FULL = "552 5.2.2 Mailbox full"


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with Dovecot() as mailbox:
        mailbox.add_user("rep", "imap-pass")
        yield mailbox


async def workspace(eng: CampaignEngine, sink: SmtpSink, imap: Dovecot | None = None) -> tuple[str, str]:
    """A workspace and its one sender, whose own bounce threshold never interferes with the campaign's."""
    ws = (await eng.create_workspace("w", monthly_limit=100_000)).id
    body: dict[str, Any] = {"email": "rep@sales.io", "daily_limit": 500, "bounce_rate_threshold": 100,
                            "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}
    if imap is not None:
        body["imap"] = {"host": "127.0.0.1", "port": imap.port, "username": "rep", "password": "imap-pass",
                        "security": "none"}
    return ws, (await eng.create_sender(ws, body))["id"]


async def campaign(eng: CampaignEngine, ws: str, sid: str, contact_ids: list[str], *, steps: int = 1,
                   settings: dict[str, Any] | None = None, schedule: dict[str, Any] | None = None) -> str:
    step_defs = [{"subject": f"step {n}", "body_html": f"<p>step {n}</p>", "delay": {"days": 0 if n == 1 else 1}}
                 for n in range(1, steps + 1)]
    cid: str = (await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": step_defs,
                                               "settings": settings or {}, "schedule": schedule or ALL_DAY}))["id"]
    await eng.enroll(ws, cid, {"contact_ids": contact_ids})
    await eng.launch_campaign(ws, cid)
    return cid


async def contacts(eng: CampaignEngine, ws: str, addresses: list[str]) -> dict[str, str]:
    return {address: (await eng.create_contact(ws, {"email": address}))["id"] for address in addresses}


async def ticks(eng: CampaignEngine, clock: ManualClock, count: int) -> None:
    for _ in range(count):
        await eng.tick()
        clock.advance(timedelta(minutes=1))


async def event_types(eng: CampaignEngine, ws: str, kind: str) -> list[dict[str, Any]]:
    return list((await eng.list_events(ws, limit=1000, type=kind))["data"])


async def test_settings_accept_the_guard_thresholds(eng: CampaignEngine, sink: SmtpSink) -> None:
    ws, sid = await workspace(eng, sink)
    created = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
        {"subject": "s", "body_html": "b"}], "settings": {"complaint_rate_threshold": 0.5, "soft_bounce_limit": 2}})
    assert created["settings"]["complaint_rate_threshold"] == 0.5 and created["settings"]["soft_bounce_limit"] == 2
    assert created["paused_reason"] is None
    for wrong in ({"complaint_rate_threshold": 101}, {"complaint_rate_threshold": -1}, {"soft_bounce_limit": 0}):
        with pytest.raises(ValidationFailed):
            await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "settings": wrong})


async def test_refusals_pause_the_campaign_at_its_twentieth_attempt(eng: CampaignEngine, clock: ManualClock,
                                                                    sink: SmtpSink) -> None:
    """3 refused among the first attempts: 15% over the default 8%, judged once 20 attempts were made."""
    dead = [f"dead{i}@corp.io" for i in range(3)]
    sink.behaviour = SinkBehaviour(rcpt_replies={address: USER_UNKNOWN for address in dead})
    ws, sid = await workspace(eng, sink)
    people = await contacts(eng, ws, dead + [f"p{i}@corp{i}.io" for i in range(27)])
    cid = await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 19)
    assert (await eng.get_campaign(ws, cid))["status"] == "active"  # 3 of 19: too few attempts to judge
    await ticks(eng, clock, 10)
    paused = await eng.get_campaign(ws, cid)
    assert paused["status"] == "paused"
    assert paused["paused_reason"].startswith("bounce rate 15.00% over the campaign's 8% threshold")
    assert len(sink.messages) == 17  # paused right after the 20th attempt: nothing more went
    [event] = await event_types(eng, ws, "campaign.paused")
    assert "bounce rate" in event["data"]["reason"]
    resumed = await eng.resume_campaign(ws, cid)
    assert resumed["status"] == "active" and resumed["paused_reason"] is None


async def test_complaint_report_pauses_the_campaign(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                    imap: Dovecot) -> None:
    """One complaint in 20 sent is 5%, over the 0.3% line."""
    ws, sid = await workspace(eng, sink, imap)
    people = await contacts(eng, ws, [f"p{i}@corp{i}.io" for i in range(20)])
    cid = await campaign(eng, ws, sid, list(people.values()), steps=2)
    await ticks(eng, clock, 20)
    assert len(sink.messages) == 20 and (await eng.get_campaign(ws, cid))["status"] == "active"
    first = sink.messages[0]
    imap.append("rep", arf(str(first.message_id), first.rcpt_tos[0]))
    report = await eng.poll_mailboxes()
    assert report.complaints == 1
    paused = await eng.get_campaign(ws, cid)
    assert paused["status"] == "paused"
    assert paused["paused_reason"].startswith("complaint rate 5.00% over the campaign's 0.3% threshold")


async def test_a_senders_own_complaint_rate_disables_it_from_its_twentieth_send(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, imap: Dovecot) -> None:
    """Given a sender's 19 sends, a complaint leaves it active; given 20, the next one disables it."""
    ws, sid = await workspace(eng, sink, imap)
    people = await contacts(eng, ws, [f"p{i}@corp{i}.io" for i in range(20)])
    # the campaign's own guard is set out of the way: this is the sender's
    await campaign(eng, ws, sid, list(people.values()), steps=2, settings={"complaint_rate_threshold": 100})
    await ticks(eng, clock, 19)
    assert len(sink.messages) == 19
    imap.append("rep", arf(str(sink.messages[0].message_id), sink.messages[0].rcpt_tos[0]))
    assert (await eng.poll_mailboxes()).complaints == 1
    assert (await eng.get_sender(ws, sid))["status"] == "active"  # 19 sends: too young to judge
    await ticks(eng, clock, 1)
    assert len(sink.messages) == 20
    imap.append("rep", arf(str(sink.messages[1].message_id), sink.messages[1].rcpt_tos[0]))
    assert (await eng.poll_mailboxes()).complaints == 1
    sender = await eng.get_sender(ws, sid)
    assert sender["status"] == "disabled"
    assert sender["disabled_reason"] == "complaint rate 10.00% over the 0.3% threshold (2 complaints of 20 sent)"
    assert [event["data"]["status"] for event in await event_types(eng, ws, "sender.disabled")] == ["disabled"]


async def test_soft_refusals_in_a_row_suppress_the_address(eng: CampaignEngine, clock: ManualClock,
                                                           sink: SmtpSink) -> None:
    """A full mailbox refused by three campaigns in a row: the third refusal suppresses it (default 3)."""
    sink.behaviour = SinkBehaviour(rcpt_replies={"full@corp.io": MAILBOX_FULL})
    ws, sid = await workspace(eng, sink)
    people = await contacts(eng, ws, ["full@corp.io"])
    for _ in range(2):
        await campaign(eng, ws, sid, list(people.values()))
        await ticks(eng, clock, 2)
    assert (await eng.list_suppressions(ws))["data"] == []  # two soft bounces: not yet
    await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 2)
    [suppression] = (await eng.list_suppressions(ws))["data"]
    assert (suppression["value"], suppression["reason"]) == ("full@corp.io", "soft_bounces")
    fourth = await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 2)
    assert len(await event_types(eng, ws, "email.bounced")) == 3  # the fourth campaign never tried it
    [skipped] = await event_types(eng, ws, "enrollment.skipped")
    assert (skipped["data"]["campaign_id"], skipped["data"]["reason"]) == (fourth, "suppressed")


async def test_a_delivery_breaks_the_run_of_soft_refusals(eng: CampaignEngine, clock: ManualClock,
                                                          sink: SmtpSink) -> None:
    ws, sid = await workspace(eng, sink)
    people = await contacts(eng, ws, ["full@corp.io"])
    for reply in (MAILBOX_FULL, None, MAILBOX_FULL, MAILBOX_FULL):
        sink.behaviour = SinkBehaviour(rcpt_replies={"full@corp.io": reply} if reply else {})
        await campaign(eng, ws, sid, list(people.values()))
        await ticks(eng, clock, 2)
    assert len(await event_types(eng, ws, "email.bounced")) == 3
    assert (await eng.list_suppressions(ws))["data"] == []  # soft, sent, soft, soft: two in a row
    sink.behaviour = SinkBehaviour(rcpt_replies={"full@corp.io": MAILBOX_FULL})
    await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 2)
    assert [s["reason"] for s in (await eng.list_suppressions(ws))["data"]] == ["soft_bounces"]  # now three


async def test_soft_bounce_reports_in_a_row_suppress_the_address(eng: CampaignEngine, clock: ManualClock,
                                                                 sink: SmtpSink, imap: Dovecot) -> None:
    """Two reports of a full mailbox with ``soft_bounce_limit: 2``; a delivery in between would reset it."""
    ws, sid = await workspace(eng, sink, imap)
    people = await contacts(eng, ws, ["full@corp.io"])
    await campaign(eng, ws, sid, list(people.values()), steps=3, settings={"soft_bounce_limit": 2})
    await ticks(eng, clock, 2)
    imap.append("rep", dsn(str(sink.messages[0].message_id), "full@corp.io", "4.2.2", "452 4.2.2 Mailbox full"))
    await eng.poll_mailboxes()
    assert (await eng.list_suppressions(ws))["data"] == []
    clock.advance(timedelta(days=1))
    await ticks(eng, clock, 2)
    assert len(sink.messages) == 2
    second = dsn(str(sink.messages[1].message_id), "full@corp.io", "4.2.2", "452 4.2.2 Mailbox full")
    imap.append("rep", second.replace(b"Message-ID: <dsn.", b"Message-ID: <dsn2.", 1))  # a report of its own
    await eng.poll_mailboxes()
    [suppression] = (await eng.list_suppressions(ws))["data"]
    assert suppression["reason"] == "soft_bounces"
    clock.advance(timedelta(days=1))
    await ticks(eng, clock, 2)
    assert len(sink.messages) == 2  # the third step never goes


async def test_hard_refusal_stops_the_address_in_every_campaign(eng: CampaignEngine, clock: ManualClock,
                                                                sink: SmtpSink) -> None:
    sink.behaviour = SinkBehaviour(rcpt_replies={"dead@corp.io": USER_UNKNOWN})
    ws, sid = await workspace(eng, sink)
    people = await contacts(eng, ws, ["dead@corp.io", "ok@corp.io"])
    later = {**ALL_DAY, "start_time": "12:00"}  # the second campaign's emails wait four hours
    second = await campaign(eng, ws, sid, list(people.values()), schedule=later)
    first = await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 3)
    enrollments = {e["contact_id"]: e for e in (await eng.list_enrollments(ws, second))["data"]}
    stopped = enrollments[people["dead@corp.io"]]
    assert (stopped["status"], stopped["stop_reason"], stopped["next_send_at"]) == ("bounced", "bounced", None)
    assert enrollments[people["ok@corp.io"]]["status"] == "pending"
    cancelled = await event_types(eng, ws, "email.cancelled")
    assert [(e["data"]["campaign_id"], e["data"]["reason"]) for e in cancelled] == [(second, "bounced")]
    clock.advance(timedelta(hours=5))
    await ticks(eng, clock, 3)
    refused = [e["data"]["campaign_id"] for e in await event_types(eng, ws, "email.bounced")]
    assert refused == [first]  # the second campaign never tried the dead address
    assert [m.rcpt_tos[0] for m in sink.messages] == ["ok@corp.io", "ok@corp.io"]


async def test_hard_bounce_report_stops_the_address_in_every_campaign(eng: CampaignEngine, clock: ManualClock,
                                                                      sink: SmtpSink, imap: Dovecot) -> None:
    ws, sid = await workspace(eng, sink, imap)
    people = await contacts(eng, ws, ["dead@corp.io"])
    second = await campaign(eng, ws, sid, list(people.values()), schedule={**ALL_DAY, "start_time": "12:00"})
    await campaign(eng, ws, sid, list(people.values()))
    await ticks(eng, clock, 2)
    [sent] = sink.messages
    imap.append("rep", dsn(str(sent.message_id), "dead@corp.io", "5.1.1", USER_UNKNOWN))
    await eng.poll_mailboxes()
    [enrollment] = (await eng.list_enrollments(ws, second))["data"]
    assert (enrollment["status"], enrollment["stop_reason"]) == ("bounced", "bounced")
    clock.advance(timedelta(hours=5))
    await ticks(eng, clock, 2)
    assert len(sink.messages) == 1


async def test_a_database_made_before_paused_reason_is_rebuilt_in_shape(sqlite_url: str, clock: ManualClock,
                                                                      sink: SmtpSink) -> None:
    """rm_campaigns without ``paused_reason`` and the campaigns projection at version 1: opening the
    database reshapes the table and rebuilds it, and a guard's pause shows its reason."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        ws, sid = await workspace(engine, sink)
        cid = await campaign(engine, ws, sid, list((await contacts(engine, ws, ["a@corp.io"])).values()))
        async with engine.store.write_engine.begin() as conn:
            await conn.execute(text("ALTER TABLE rm_campaigns DROP COLUMN paused_reason"))
            await conn.execute(text("UPDATE projection_state SET version = 1 WHERE name = 'campaigns'"))
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        shown = await engine.get_campaign(ws, cid)
        assert (shown["status"], shown["paused_reason"]) == ("active", None)


def arf(message_id: str, recipient: str) -> bytes:
    """A spam complaint (RFC 5965) about our message, as a feedback loop sends it."""
    return (f"From: Feedback Loop <fbl@isp.example>\r\nTo: rep@sales.io\r\nSubject: Abuse Report\r\n"
            f"Message-ID: <arf-{abs(hash(message_id))}@isp.example>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=feedback-report; boundary=\"ARF\"\r\n\r\n"
            f"--ARF\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
            f"--ARF\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            f"User-Agent: ExampleFBL/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <rep@sales.io>\r\n"
            f"Original-Rcpt-To: <{recipient}>\r\n\r\n"
            f"--ARF\r\nContent-Type: message/rfc822\r\n\r\nFrom: rep@sales.io\r\nTo: {recipient}\r\n"
            f"Subject: step 1\r\nMessage-ID: {message_id}\r\n\r\nHello!\r\n--ARF--\r\n").encode()
