"""Unsubscribes sent by mail to the ``mailto:`` of ``List-Unsubscribe``, read over IMAP from a real Dovecot.

RFC 8058 section 3.2: when both channels are offered, both must work. The email is sent through
the real SMTP sink, the request is built from the header the recipient actually received, and
the poller reads it from Dovecot, as in ``test_inbound``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from engine import CampaignEngine, ManualClock
from tests.delivery.dovecot import Dovecot
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"start_time": "00:00", "end_time": "24:00", "every_minutes": 1,
          "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with Dovecot() as dovecot:
        dovecot.add_user("rep", "imap-pass")
        yield dovecot


async def start(eng: CampaignEngine, sink: SmtpSink, imap: Dovecot,
                people: list[str]) -> tuple[str, str, dict[str, str]]:
    """A two-step campaign from rep@sales.io (IMAP polled) to ``people``, launched."""
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}, "imap": {
        "host": "127.0.0.1", "port": imap.port, "username": "rep", "password": "imap-pass", "security": "none"}}))[
        "id"]
    ids = {person: (await eng.create_contact(ws, {"email": person}))["id"] for person in people}
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": ALWAYS, "steps": [
        {"subject": "hello", "body_html": "one"}, {"subject": "again", "body_html": "two", "delay": {"days": 1}}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": list(ids.values())})
    await eng.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"], ids


async def tick_minutes(eng: CampaignEngine, clock: ManualClock, minutes: int) -> None:
    for _ in range(minutes):
        await eng.tick()
        clock.advance(timedelta(minutes=1))


def received(sink: SmtpSink, rcpt: str) -> Any:
    return [message for message in sink.messages if message.rcpt_tos[0] == rcpt][0]


def mailto_of(sink: SmtpSink, rcpt: str) -> tuple[str, str]:
    """The (address, subject) of the ``mailto:`` that the email to ``rcpt`` advertised."""
    header = " ".join(str(received(sink, rcpt).headers["List-Unsubscribe"]).split())
    mailto = [uri for uri in re.findall(r"<([^>]+)>", header) if uri.startswith("mailto:")][0]
    parts = urlsplit(mailto)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    return unquote(parts.path), unquote(query["subject"])


def token_of(sink: SmtpSink, rcpt: str) -> str:
    return mailto_of(sink, rcpt)[1].removeprefix("unsubscribe ")


def request(frm: str, to: str, subject: str, *, key: str, body: str = "", in_reply_to: str | None = None) -> bytes:
    """A plain message as a mail client sends it; threaded when ``in_reply_to`` is given."""
    thread = f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n" if in_reply_to else ""
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{key}@mail.example.com>\r\n{thread}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


async def events_of(eng: CampaignEngine, ws: str, kind: str) -> list[dict[str, Any]]:
    return (await eng.list_events(ws, type=kind, limit=1000))["data"]


async def enrollment_status(eng: CampaignEngine, ws: str, cid: str) -> dict[str, str]:
    return {row["contact_id"]: row["status"] for row in (await eng.list_enrollments(ws, cid))["data"]}


async def test_mailto_of_list_unsubscribe_unsubscribes_once_and_is_no_reply(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, imap: Dovecot) -> None:
    # given two contacts who received step 1, one of whom writes to the advertised mailto
    # (threaded, as some clients do: it must still not count as a reply)
    ws, cid, ids = await start(eng, sink, imap, ["ann@corp.io", "bob@other.io"])
    await tick_minutes(eng, clock, 2)
    address, subject = mailto_of(sink, "ann@corp.io")
    assert address == "rep@sales.io" and subject.startswith("unsubscribe ")
    message = request("ann@corp.io", address, subject, key="unsub-1",
                      in_reply_to=received(sink, "ann@corp.io").message_id)
    imap.append("rep", message)

    # when the mailbox is polled
    report = await eng.poll_mailboxes()

    # then ann is unsubscribed exactly as by one click, by the inbound poller, and nothing is a reply
    assert (report.unsubscribes, report.replies, report.ignored) == (1, 0, 0)
    assert (await eng.get_contact(ws, ids["ann@corp.io"]))["unsubscribed"] is True
    status = await enrollment_status(eng, ws, cid)
    assert status == {ids["ann@corp.io"]: "unsubscribed", ids["bob@other.io"]: "in_progress"}
    unsubscribed = await events_of(eng, ws, "contact.unsubscribed")
    assert [(event["data"]["contact_id"], event["data"]["reason"], event["data"]["campaign_id"])
            for event in unsubscribed] == [(ids["ann@corp.io"], "mailto", cid)]
    assert unsubscribed[0]["metadata"]["actor"] == "system:inbound"
    assert len(await events_of(eng, ws, "suppression.added")) == 1
    assert await events_of(eng, ws, "email.replied") == []
    stats = await eng.campaign_stats(ws, cid)
    assert stats["engagement"]["unsubscribed"] == 1 and stats["engagement"]["replied"] == 0
    before = len((await eng.list_events(ws, limit=1000))["data"])

    # when polled again, and then the same request arrives twice more (once as the very same
    # message, once re-sent with its own Message-ID)
    assert (await eng.poll_mailboxes()).messages == 0
    imap.append("rep", message)
    imap.append("rep", message.replace(b"unsub-1@", b"unsub-2@"))
    again = await eng.poll_mailboxes()

    # then nothing more is recorded
    assert again.messages == 2 and again.replies == 0
    assert len((await eng.list_events(ws, limit=1000))["data"]) == before

    # and ann gets no follow-up, while bob does, and another campaign skips her as unsubscribed
    clock.advance(timedelta(days=2))
    await tick_minutes(eng, clock, 3)
    assert sorted(m.rcpt_tos[0] for m in sink.messages if str(m.headers["Subject"]) == "again") == ["bob@other.io"]
    second = await eng.create_campaign(ws, {"name": "d", "sender_ids": [(await eng.list_senders(ws))["data"][0][
        "id"]], "schedule": ALWAYS, "steps": [{"subject": "new", "body_html": "three"}]})
    result = await eng.enroll(ws, second["id"], {"contact_ids": [ids["ann@corp.io"]]})
    assert result["added"] == 0 and result["skipped"] == {"unsubscribed": 1}


@pytest.mark.parametrize("form", ["subaddress", "body"])
async def test_token_in_subaddress_or_body_unsubscribes(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                       imap: Dovecot, form: str) -> None:
    # given a contact who asks out by sub-addressing or by pasting the token in the text
    ws, cid, ids = await start(eng, sink, imap, ["ann@corp.io"])
    await tick_minutes(eng, clock, 1)
    token = token_of(sink, "ann@corp.io")
    if form == "subaddress":
        message = request("ann@corp.io", f"rep+unsubscribe-{token}@sales.io", "", key=form)
    else:
        message = request("ann@corp.io", "rep@sales.io", "Re: hello", key=form, body=f"Please remove me: {token}",
                          in_reply_to=received(sink, "ann@corp.io").message_id)
    imap.append("rep", message)

    # when the mailbox is polled
    report = await eng.poll_mailboxes()

    # then the contact is out, and it was no reply
    assert (report.unsubscribes, report.replies) == (1, 0)
    assert (await enrollment_status(eng, ws, cid)) == {ids["ann@corp.io"]: "unsubscribed"}
    assert (await eng.campaign_stats(ws, cid))["engagement"]["unsubscribed"] == 1


async def test_forged_token_or_quoted_link_is_read_as_before(eng: CampaignEngine, clock: ManualClock,
                                                             sink: SmtpSink, imap: Dovecot) -> None:
    # given ann's genuine token with its payload changed to bob's id and its MAC kept (a forgery
    # to unsubscribe someone else), sent as a threaded reply; and a reply from cy that quotes her
    # email's visible one-click link (a link for the page, not a request to leave)
    ws, cid, ids = await start(eng, sink, imap, ["ann@corp.io", "bob@other.io", "cy@third.io"])
    await tick_minutes(eng, clock, 3)
    address, subject = mailto_of(sink, "ann@corp.io")
    payload_text, mac = token_of(sink, "ann@corp.io").split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4)))
    payload["c"] = ids["bob@other.io"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    forged = forged_payload.rstrip(b"=").decode() + "." + mac
    imap.append("rep", request("ann@corp.io", address, f"unsubscribe {forged}", key="forged",
                               in_reply_to=received(sink, "ann@corp.io").message_id))
    link = f"https://track.example.com/u/{token_of(sink, 'cy@third.io')}"
    imap.append("rep", request("cy@third.io", "rep@sales.io", "Re: hello", key="quoted",
                               body=f"Sounds good, let's talk.\r\n\r\n> Unsubscribe: {link}",
                               in_reply_to=received(sink, "cy@third.io").message_id))

    # when the mailbox is polled
    report = await eng.poll_mailboxes()

    # then nobody is unsubscribed, and both messages are replies as before
    assert (report.unsubscribes, report.replies) == (0, 2)
    assert await events_of(eng, ws, "contact.unsubscribed") == []
    status = await enrollment_status(eng, ws, cid)
    assert status == {ids["ann@corp.io"]: "replied", ids["bob@other.io"]: "in_progress",
                      ids["cy@third.io"]: "replied"}
