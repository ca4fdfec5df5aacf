"""Replies, out-of-office, bounces and complaints read over IMAP from a real Dovecot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from engine import CampaignEngine, ManualClock
from tests.delivery.dovecot import Dovecot
from tests.delivery.smtp_server import SmtpSink


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with Dovecot() as d:
        d.add_user("rep", "imap-pass")
        yield d


def reply(to_mid: str, frm: str, *, auto: bool = False, subject: str = "Re: hello") -> bytes:
    extra = "Auto-Submitted: auto-replied\r\n" if auto else ""
    return (f"From: {frm}\r\nTo: rep@sales.io\r\nSubject: {subject}\r\nMessage-ID: <r{abs(hash((to_mid, frm)))}"
            f"@mail.example.com>\r\nIn-Reply-To: {to_mid}\r\nReferences: {to_mid}\r\n{extra}"
            f"Content-Type: text/plain\r\n\r\nThanks, interested!\r\n").encode()


def dsn(to_mid: str, rcpt: str, status: str, diag: str) -> bytes:
    b = "BOUNDARY42"
    return (f"From: MAILER-DAEMON@mx.example.com\r\nTo: rep@sales.io\r\nSubject: Undelivered Mail Returned to "
            f"Sender\r\nMessage-ID: <dsn.{status}.{rcpt}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f"report-type=delivery-status; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain\r\n\r\n"
            f"Delivery to {rcpt} failed.\r\n\r\n--{b}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\n"
            f"Action: failed\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; {diag}\r\n\r\n--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: rep@sales.io\r\nTo: {rcpt}\r\nMessage-ID: {to_mid}\r\nSubject: hello\r\n\r\n--{b}--\r\n").encode()


async def start(eng: CampaignEngine, sink: SmtpSink, imap: Dovecot, emails: list[str],
                settings: dict[str, Any]) -> tuple[str, str, str, dict[str, str]]:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}, "imap": {
        "host": "127.0.0.1", "port": imap.port, "username": "rep", "password": "imap-pass", "security": "none"}}))[
        "id"]
    ids = {e: (await eng.create_contact(ws, {"email": e}))["id"] for e in emails}
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "settings": settings, "steps": [
        {"subject": "hello", "body_html": "one"}, {"subject": "again", "body_html": "two", "delay": {"days": 1}}],
        "schedule": {"start_time": "00:00", "end_time": "24:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                                         "sun"], "every_minutes": 1}})
    await eng.enroll(ws, cmp["id"], {"contact_ids": list(ids.values())})
    await eng.launch_campaign(ws, cmp["id"])
    return ws, sid, cmp["id"], ids


async def send_first_steps(eng: CampaignEngine, clock: ManualClock, n: int) -> None:
    for _ in range(n):
        await eng.tick()
        clock.advance(timedelta(minutes=1))


def mid(sink: SmtpSink, rcpt: str) -> str:
    return [m.message_id for m in sink.messages if m.rcpt_tos[0] == rcpt][0]  # type: ignore[return-value]


async def test_replies_ooo_and_company_rule(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                            imap: Dovecot) -> None:
    people = ["ann@corp.io", "bob@corp.io", "cy@other.io", "dee@gmail.com", "eve@gmail.com"]
    ws, _sid, cid, ids = await start(eng, sink, imap, people, {"stop_on_company_reply": True})
    await send_first_steps(eng, clock, 5)
    imap.append("rep", reply(mid(sink, "ann@corp.io"), "ann@corp.io"))
    imap.append("rep", reply(mid(sink, "cy@other.io"), "cy@other.io", auto=True, subject="Out of office"))
    imap.append("rep", reply(mid(sink, "dee@gmail.com"), "dee@gmail.com"))
    imap.append("rep", b"From: stranger@x.io\r\nSubject: hi\r\nMessage-ID: <s@x.io>\r\n\r\nnot ours\r\n")
    first = await eng.poll_mailboxes()
    assert (first.replies, first.out_of_office, first.ignored) == (2, 1, 1)
    again = await eng.poll_mailboxes()
    assert again.messages == 0
    status = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cid))["data"]}
    assert status[ids["ann@corp.io"]] == "replied"
    assert status[ids["bob@corp.io"]] == "stopped"  # colleague at the same company
    assert status[ids["cy@other.io"]] == "in_progress"  # out of office ignored
    assert status[ids["dee@gmail.com"]] == "replied" and status[ids["eve@gmail.com"]] == "in_progress"  # free mail
    stats = await eng.campaign_stats(ws, cid)
    assert stats["engagement"]["replied"] == 2 and stats["engagement"]["out_of_office"] == 1
    clock.advance(timedelta(days=2))
    await send_first_steps(eng, clock, 5)
    second_steps = sorted(m.rcpt_tos[0] for m in sink.messages if str(m.headers["Subject"]) == "again")
    assert second_steps == ["cy@other.io", "eve@gmail.com"]


async def test_bounces_by_type_and_polling_once(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                imap: Dovecot) -> None:
    people = ["dead@corp.io", "full@corp.io", "spam@corp.io"]
    ws, _sid, cid, ids = await start(eng, sink, imap, people, {})
    await send_first_steps(eng, clock, 3)
    imap.append("rep", dsn(mid(sink, "dead@corp.io"), "dead@corp.io", "5.1.1", "550 5.1.1 User unknown"))
    imap.append("rep", dsn(mid(sink, "full@corp.io"), "full@corp.io", "4.2.2", "452 4.2.2 Mailbox full"))
    imap.append("rep", dsn(mid(sink, "spam@corp.io"), "spam@corp.io", "5.7.1",
                           "550 5.7.1 Message rejected as spam by content filter"))
    report = await eng.poll_mailboxes()
    assert report.bounces == 3
    await eng.poll_mailboxes()
    stats = await eng.campaign_stats(ws, cid)
    assert stats["emails"]["bounced"] == 3
    assert stats["emails"]["bounce_types"] == {"hard": 1, "soft": 1, "block": 1}
    assert (await eng.get_contact(ws, ids["dead@corp.io"]))["bounced"] is True
    assert (await eng.get_contact(ws, ids["spam@corp.io"]))["bounced"] is False  # a block is not the contact
    status = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cid))["data"]}
    assert status[ids["dead@corp.io"]] == "bounced" and status[ids["spam@corp.io"]] == "bounced"
    assert status[ids["full@corp.io"]] == "in_progress"  # soft: may succeed later


async def test_bounce_rate_disables_sender_and_reenable(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                        imap: Dovecot) -> None:
    people = [f"p{i}@corp{i}.io" for i in range(25)]
    ws, sid, _cid, _ids = await start(eng, sink, imap, people, {"bounce_rate_threshold": 50})
    await send_first_steps(eng, clock, 25)
    for p in people[:2]:
        imap.append("rep", dsn(mid(sink, p), p, "5.1.1", "550 5.1.1 User unknown"))
    await eng.poll_mailboxes()
    assert (await eng.get_sender(ws, sid))["status"] == "active"  # 2/25 = 8%: not over the threshold
    imap.append("rep", dsn(mid(sink, people[2]), people[2], "5.1.1", "550 5.1.1 User unknown"))
    await eng.poll_mailboxes()
    sender = await eng.get_sender(ws, sid)
    assert sender["status"] == "disabled" and "bounce rate" in sender["disabled_reason"]
    before = len(sink.messages)
    clock.advance(timedelta(days=2))
    await send_first_steps(eng, clock, 3)
    assert len(sink.messages) == before  # its follow-ups wait
    await eng.reenable_sender(ws, sid)
    await send_first_steps(eng, clock, 2)
    assert len(sink.messages) > before


async def test_failing_mailbox_disconnects_only_that_sender(eng: CampaignEngine, sink: SmtpSink,
                                                            imap: Dovecot) -> None:
    ws = (await eng.create_workspace("w")).id
    good = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                          "security": "none"},
                                         "imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                                  "password": "imap-pass", "security": "none"}}))["id"]
    bad = (await eng.create_sender(ws, {"email": "x@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                       "security": "none"},
                                        "imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                                 "password": "wrong", "security": "none"}}))["id"]
    report = await eng.poll_mailboxes()
    assert list(report.errors) == [bad]
    assert (await eng.get_sender(ws, bad))["status"] == "disconnected"
    assert (await eng.get_sender(ws, good))["status"] == "active"


async def test_uidvalidity_change_resyncs_without_double_counting(eng: CampaignEngine, clock: ManualClock,
                                                                  sink: SmtpSink, imap: Dovecot) -> None:
    ws = (await eng.create_workspace("w")).id
    imap.create_folder("rep", "Replies")
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                          "security": "none"},
                                        "imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                                 "password": "imap-pass", "security": "none",
                                                 "folder": "Replies"}}))["id"]
    con = (await eng.create_contact(ws, {"email": "ann@corp.io"}))["id"]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
        {"subject": "hello", "body_html": "one"}], "schedule": {"start_time": "00:00", "end_time": "24:00"}})
    await eng.enroll(ws, cmp["id"], {"contact_ids": [con]})
    await eng.launch_campaign(ws, cmp["id"])
    await eng.tick()
    message = reply(mid(sink, "ann@corp.io"), "ann@corp.io")
    imap.append("rep", message, folder="Replies")
    assert (await eng.poll_mailboxes()).replies == 1
    before = imap.uidvalidity("rep", "Replies")
    imap.recreate_folder("rep", "Replies")
    imap.append("rep", message, folder="Replies")
    assert imap.uidvalidity("rep", "Replies") != before
    again = await eng.poll_mailboxes()
    assert again.messages == 1 and again.replies == 0  # re-read after the resync, counted once
    assert (await eng.campaign_stats(ws, cmp["id"]))["engagement"]["replied"] == 1


async def test_an_unreachable_mailbox_disconnects_its_sender_only_after_five_polls_in_a_row(
        eng: CampaignEngine, sink: SmtpSink, imap: Dovecot) -> None:
    """Given a sender whose IMAP server went away, when polls fail then one works, then it stays active."""
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                          "security": "none"},
                                        "imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                                 "password": "imap-pass", "security": "none"}}))["id"]
    imap.stop()  # the IMAP server is killed: connections are refused
    for _ in range(4):
        report = await eng.poll_mailboxes()
        assert report.errors[sid].startswith("connection")
    assert (await eng.get_sender(ws, sid))["status"] == "active"  # four failures: it still sends
    imap.start()  # back, on a new port
    imap.add_user("rep", "imap-pass")
    await eng.update_sender(ws, sid, {"imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                               "password": "imap-pass", "security": "none"}})
    assert (await eng.poll_mailboxes()).errors == {}  # a poll that works starts the count again
    imap.stop()
    for _ in range(4):
        await eng.poll_mailboxes()
    assert (await eng.get_sender(ws, sid))["status"] == "active"
    assert not (await eng.list_events(ws, type="sender.disabled"))["data"]
    await eng.poll_mailboxes()  # the fifth in a row
    sender = await eng.get_sender(ws, sid)
    assert sender["status"] == "disconnected"
    assert sender["disabled_reason"].startswith("IMAP: 5 failed polls in a row; the last: connection")


async def test_a_refused_imap_login_disconnects_at_once(eng: CampaignEngine, sink: SmtpSink, imap: Dovecot) -> None:
    """Given a sender with a wrong IMAP password, when polled once, then it is disconnected (an operator must act)."""
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                          "security": "none"},
                                        "imap": {"host": "127.0.0.1", "port": imap.port, "username": "rep",
                                                 "password": "wrong", "security": "none"}}))["id"]
    await eng.poll_mailboxes()
    sender = await eng.get_sender(ws, sid)
    assert sender["status"] == "disconnected" and sender["disabled_reason"].startswith("IMAP: auth")
