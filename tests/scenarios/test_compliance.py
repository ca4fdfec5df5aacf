"""Compliance and deliverability rules of contract section 6, against the real servers.

Delay notices come over IMAP from a real Dovecot, emails go through a real aiosmtpd sink, and
the one-click unsubscribe is the recipient's real POST to the tracking app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.api.test_tracking import ALWAYS, launch, send_first_steps
from tests.conftest import PUBLIC
from tests.delivery.dovecot import Dovecot
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink
from tests.scenarios.test_inbound import mid, start
from tests.scenarios.test_inbound import send_first_steps as tick_minutes


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with Dovecot() as dovecot:
        dovecot.add_user("rep", "imap-pass")
        yield dovecot


@pytest.fixture
async def web(eng: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The recipients' side of the app: no API key."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url=PUBLIC) as client:
        yield client


def delay_notice(to_mid: str, rcpt: str, *, retry_until: str | None) -> bytes:
    """An RFC 3464 report with ``Action: delayed``: the remote MTA still holds the message."""
    boundary = "DELAY42"
    until = f"Will-Retry-Until: {retry_until}\r\n" if retry_until else ""
    return (f"From: MAILER-DAEMON@mx.example.com\r\nTo: rep@sales.io\r\nSubject: Delivery Status Notification "
            f"(Delay)\r\nMessage-ID: <delay.{rcpt}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f"report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n"
            f"Content-Type: text/plain\r\n\r\nDelivery to {rcpt} is delayed. We will keep trying.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n"
            f"\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: delayed\r\nStatus: 4.4.7\r\n{until}"
            f"Diagnostic-Code: smtp; 421 4.4.7 Connection timed out\r\n\r\n--{boundary}\r\n"
            f"Content-Type: text/rfc822-headers\r\n\r\nFrom: rep@sales.io\r\nTo: {rcpt}\r\nMessage-ID: {to_mid}\r\n"
            f"Subject: hello\r\n\r\n--{boundary}--\r\n").encode()


# -- delay notices -------------------------------------------------------------------------------
async def test_delay_notices_are_recorded_shown_and_never_bounces(eng: CampaignEngine, clock: ManualClock,
                                                                  sink: SmtpSink, imap: Dovecot) -> None:
    # given 20 sent emails (enough for the sender's bounce-rate guard to judge) and a delay
    # notice for every one of them, the first with a Will-Retry-Until
    people = [f"p{i}@corp{i}.io" for i in range(20)]
    ws, sid, cid, ids = await start(eng, sink, imap, people, {})
    await tick_minutes(eng, clock, 20)
    for n, person in enumerate(people):
        imap.append("rep", delay_notice(mid(sink, person), person,
                                        retry_until="Sat, 5 Dec 2026 19:00:00 +0000" if n == 0 else None))

    # when the mailbox is polled
    report = await eng.poll_mailboxes()

    # then each is a delay, not a bounce: nothing counts as bounced and the sender stays active
    assert (report.delayed, report.bounces) == (20, 0)
    stats = await eng.campaign_stats(ws, cid)
    assert stats["emails"]["bounced"] == 0 and stats["emails"]["sent"] == 20
    assert stats["rates"]["bounce_rate"] == 0.0
    assert [(s["bounced"], s["bounce_rate"], s["status"]) for s in stats["senders"]] == [(0, 0.0, "active")]
    assert (await eng.get_sender(ws, sid))["status"] == "active"
    assert (await eng.get_contact(ws, ids[people[0]]))["bounced"] is False
    # ... and the activity feed shows it with what the report said
    feed = (await eng.campaign_activity(ws, cid, type="email.delayed", contact_id=ids[people[0]]))["data"]
    assert [(item["type"], item["step"], item["email"]) for item in feed] == [("email.delayed", 1, people[0])]
    assert feed[0]["metadata"]["status"] == "4.4.7"
    assert feed[0]["metadata"]["will_retry_until"].startswith("2026-12-05T19:00:00")
    assert feed[0]["metadata"]["sender_id"] == sid
    # ... and the enrollments go on to their next step
    status = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cid))["data"]}
    assert set(status.values()) == {"in_progress"}
    clock.advance(timedelta(days=2))
    await tick_minutes(eng, clock, 3)
    assert any(m.rcpt_tos[0] == people[0] and "again" in str(m.headers["Subject"]) for m in sink.messages)


# -- skip reasons --------------------------------------------------------------------------------
async def test_unsubscribed_contact_is_skipped_as_unsubscribed(eng: CampaignEngine, clock: ManualClock,
                                                               sink: SmtpSink, web: httpx.AsyncClient) -> None:
    # given one contact who unsubscribed with one click (which also suppresses the address) and
    # another whose address was suppressed by hand
    world = await launch(eng, sink, contacts=2)
    links = await send_first_steps(eng, clock, sink, 2)
    leaving, suppressed = world.contacts
    answer = await web.post(links[("p0@corp.io", "Hello")].unsubscribe, content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    await eng.add_suppression(world.ws, {"email": "p1@corp.io"})
    assert {s["reason"] for s in (await eng.list_suppressions(world.ws))["data"]} == {"unsubscribed", "manual"}
    sid = (await eng.create_sender(world.ws, {"email": "other@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    second = await eng.create_campaign(world.ws, {"name": "Again", "sender_ids": [sid], "schedule": ALWAYS,
                                                  "steps": [{"subject": "Again", "body_html": "<p>hi</p>"}]})

    # when both are enrolled in another campaign
    result = await eng.enroll(world.ws, second["id"], {"contact_ids": [leaving, suppressed]})

    # then each is skipped for its most specific reason
    assert result["added"] == 0
    assert result["skipped"] == {"unsubscribed": 1, "suppressed": 1}


# -- sender bounce rate --------------------------------------------------------------------------
async def test_sender_bounce_rate_counts_smtp_refusals_as_attempts(eng: CampaignEngine, clock: ManualClock,
                                                                   sink: SmtpSink) -> None:
    # given a sender whose SMTP server refuses one of eleven recipients for good
    sink.behaviour = SinkBehaviour(rcpt_replies={"p0@corp.io": "550 5.1.1 no such user"})
    world = await launch(eng, sink, contacts=11)

    # when all eleven are attempted: ten accepted, one refused
    for _ in range(30):
        await eng.tick()
        clock.advance(timedelta(minutes=1))

    # then the sender's bounce_rate is over sent plus refused, like the campaign's (1 / 11)
    stats = await eng.campaign_stats(world.ws, world.cid)
    assert (stats["emails"]["sent"], stats["emails"]["bounced"]) == (10, 1)
    [sender] = stats["senders"]
    assert (sender["sent"], sender["bounced"], sender["bounce_rate"]) == (10, 1, 9.09)
    assert sender["bounce_rate"] == stats["rates"]["bounce_rate"]
