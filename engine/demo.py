"""``campaign-engine demo``: a whole three-step campaign over a simulated week and a half, in seconds.

Everything is real except time and the recipients: a throwaway SQLite file, a local aiosmtpd
capture server on a free loopback port, and a ManualClock moved to each moment the engine says
something is due. Step 1 is an A/B test of two subjects; the schedule keeps French public holidays,
so 1 May (a Friday) goes by without a send. After the first day a few recipients "open" (their
pixel URL, taken from the captured message, goes through the tracking service), two reply and one
address bounces: real RFC 5322 replies and an RFC 3464 report handed to ``receive_message``, the
path a polled mailbox takes. Their sequences stop, the forecast made after them still equals what
the ticks send, and the stats come out per step and per variant.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import email.utils
import re
import socket
import tempfile
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiosmtpd.controller import Controller
from rich.console import Console
from rich.table import Table

from engine.clock import ManualClock
from engine.facade import CampaignEngine

FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen"]
COMPANIES = ["Initech", "Globex", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises", "Acme"]


class CaptureHandler:
    """Keeps every message the engine delivers, as bytes."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 2.0.0 captured"


HOLIDAY = date(2026, 5, 1)  # Fête du Travail, a Friday: a French public holiday inside the simulated span
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.4 Safari/605.1.15")  # a reader's mail client, not an image proxy
_PIXEL = re.compile(r"/t/o/([A-Za-z0-9_.-]+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reply_to(sent: email.message.EmailMessage, text: str) -> bytes:
    """A person's answer to one of our emails, threaded as a mail client threads it (RFC 5322 3.6.4)."""
    mid = str(sent["Message-ID"])
    return (f"From: {sent['To']}\r\nTo: {sent['From']}\r\nSubject: Re: {sent['Subject']}\r\n"
            f"Date: Mon, 27 Apr 2026 18:04:11 +0200\r\nMessage-ID: <reply.{abs(hash(mid))}@mail.example.net>\r\n"
            f"In-Reply-To: {mid}\r\nReferences: {mid}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\r\n> {sent['Subject']}\r\n").encode()


def delivery_failure(sent: email.message.EmailMessage) -> bytes:
    """The report a recipient's MX sends back when the mailbox does not exist (RFC 3464, 5.1.1)."""
    recipient = email.utils.parseaddr(str(sent["To"]))[1]
    domain = recipient.split("@", 1)[1]
    boundary = "dsn-boundary-0427"
    return (f"From: Mail Delivery System <MAILER-DAEMON@mx.{domain}>\r\nTo: {sent['From']}\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nDate: Mon, 27 Apr 2026 11:02:40 +0200\r\n"
            f"Message-ID: <dsn.{abs(hash(str(sent['Message-ID'])))}@mx.{domain}>\r\nAuto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
            f"boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"I'm sorry to have to inform you that your message could not be delivered to {recipient}.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.{domain}\r\nArrival-Date: Mon, 27 Apr 2026 11:02:39 +0200\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822; {recipient}\r\n"
            f"Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.{domain}\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: {sent['From']}\r\nTo: {sent['To']}\r\nSubject: {sent['Subject']}\r\n"
            f"Message-ID: {sent['Message-ID']}\r\n\r\n--{boundary}--\r\n").encode()


async def _run_until(engine: CampaignEngine, clock: ManualClock, end: datetime, tz: ZoneInfo,
                     sent_by_day: Counter[str]) -> None:
    """Tick at each moment the engine says something is due, until ``end``."""
    while True:
        report = await engine.tick()
        if report.sent:
            sent_by_day[clock.now().astimezone(tz).date().isoformat()] += report.sent
        if report.next_due_at is None or report.next_due_at >= end:
            clock.set(max(clock.now(), end))
            return
        clock.set(report.next_due_at)


async def run_demo(console: Console, contacts: int = 50, days: int = 9) -> dict[str, Any]:
    handler = CaptureHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    tz = ZoneInfo("Europe/Paris")
    start = datetime(2026, 4, 27, 5, 30, tzinfo=UTC)  # a Monday morning, before the window opens
    clock = ManualClock(start)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
            async with CampaignEngine(url, clock=clock, secret_key="demo-secret-key-0123456789abcdef",
                                      public_url="http://127.0.0.1:8080") as engine:
                ws = (await engine.create_workspace("demo", monthly_limit=10_000)).id
                senders = {name: (await engine.create_sender(ws, {
                    "email": f"{name}@demo-sender.com", "from_name": f"{name.title()} from Demo", "daily_limit": 40,
                    "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}))["id"]
                    for name in ("alice", "bob")}
                ids = []
                for i in range(contacts):
                    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
                    domain = COMPANIES[i % len(COMPANIES)].split()[0].lower()
                    ids.append((await engine.create_contact(ws, {
                        "email": f"{first.lower()}.{last.lower()}{i}@{domain}.com",
                        "first_name": first, "last_name": last, "company": COMPANIES[i % len(COMPANIES)]}))["id"])
                campaign = await engine.create_campaign(ws, {
                    "name": "Demo outreach", "sender_ids": list(senders.values()),
                    "schedule": {"timezone": "Europe/Paris", "start_time": "09:00", "end_time": "17:00",
                                 "min_wait_seconds": 300, "max_wait_seconds": 900, "holidays": "FR"},
                    "settings": {"track_opens": True, "track_clicks": True, "stop_on_reply": True},
                    "steps": [
                        {"subject": "Quick question, {{first_name|there}}",
                         "body_html": "<p>Hi {{first_name|there}},</p><p>Does {{company|your team}} still sort "
                                      "inbound mail by hand? <a href=\"https://example.com/tour\">A 2-minute tour</a>"
                                      ".</p>",
                         "variants": [{"id": "A", "weight": 1},
                                      {"id": "B", "subject": "{{company|Your team}} and inbound mail", "weight": 1}]},
                        {"subject": "Following up", "body_html": "<p>Just bumping this, {{first_name}}.</p>",
                         "delay": {"days": 2, "business_days": True}},
                        {"subject": "Last note", "body_html": "<p>I'll stop here. Thanks, {{first_name}}!</p>",
                         "delay": {"days": 2}},
                    ]})
                cid = campaign["id"]
                await engine.enroll(ws, cid, {"contact_ids": ids})
                await engine.launch_campaign(ws, cid)
                first_forecast = await engine.forecast(ws, cid, days=1)
                end = start + timedelta(days=days)
                sent_by_day: Counter[str] = Counter()
                first_evening = datetime(2026, 4, 27, 17, 0, tzinfo=tz)
                await _run_until(engine, clock, first_evening, tz, sent_by_day)

                # The first day's mail comes back: opens through the pixel, replies and a bounce
                # through the inbound path.
                first_steps = [email.message_from_bytes(raw, policy=email.policy.default)
                               for raw in handler.messages]
                sender_ids = {f"{name}@demo-sender.com": sid for name, sid in senders.items()}
                opens = 0
                for sent in first_steps[:10]:
                    html = sent.get_body(preferencelist=("html",))
                    found = _PIXEL.search(html.get_content()) if html is not None else None
                    if found is not None and await engine.track_open(found.group(1), user_agent=BROWSER):
                        opens += 1
                inbound = []
                for sent, answer in ((first_steps[1], "Yes, it takes us hours. Can we talk Thursday?"),
                                   (first_steps[2], "Interesting - send me the tour link again?")):
                    sender_id = sender_ids[email.utils.parseaddr(str(sent["From"]))[1]]
                    inbound.append(await engine.receive_message(reply_to(sent, answer), sender_id=sender_id))
                bounced = first_steps[7]
                inbound.append(await engine.receive_message(delivery_failure(bounced), workspace_id=ws))
                replies = sum(r.replies for r in inbound)
                bounces = sum(r.bounces for r in inbound)
                console.print(f"first day: {len(first_steps)} sent; simulated {opens} opens, {replies} replies and "
                              f"{bounces} bounce ({bounced['To']})")

                forecast = await engine.forecast(ws, cid, days=days)  # after the replies and the bounce
                await _run_until(engine, clock, end, tz, sent_by_day)

                planned = {day["date"]: day for day in forecast["days"]}
                for day in first_forecast["days"]:
                    planned[day["date"]] = day  # the first day as forecast at launch
                table = Table(title="Sends per day: forecast vs. actual (Europe/Paris)")
                for col in ("date", "forecast", "sent", "by step (forecast)"):
                    table.add_column(col)
                span = [(start.astimezone(tz).date() + timedelta(days=n)) for n in range(days)]
                for day_date in span:
                    key = day_date.isoformat()
                    day = planned.get(key, {"count": 0, "by_step": {}})
                    steps = ", ".join(f"step {k}: {v}" for k, v in day["by_step"].items()) or "-"
                    label = f"{key} {day_date:%a}" + (" (holiday)" if day_date == HOLIDAY else "")
                    table.add_row(label, str(day["count"]), str(sent_by_day.get(key, 0)), steps)
                console.print(table)
                for raw in handler.messages[:1] + handler.messages[-1:]:
                    msg = email.message_from_bytes(raw, policy=email.policy.default)
                    text = msg.get_body(preferencelist=("plain",))
                    console.rule(f"{msg['From']} -> {msg['To']}")
                    console.print(f"Subject: {msg['Subject']}\nMessage-ID: {msg['Message-ID']}")
                    if msg["In-Reply-To"]:
                        console.print(f"In-Reply-To: {msg['In-Reply-To']}")
                    console.print(text.get_content().strip() if text is not None else "")
                step_stats = await engine.campaign_step_stats(ws, cid)
                results = Table(title="Results per step and variant")
                for col in ("step", "variant", "sent", "opened", "replied", "bounced"):
                    results.add_column(col, justify="right" if col not in ("step", "variant") else "left")
                for step in step_stats:
                    results.add_row(f"step {step['step']}", "all", str(step["sent"]), str(step["opened"]),
                                    str(step["replied"]), str(step["bounced"]))
                    for variant in step["variants"]:
                        results.add_row("", str(variant["variant"]), str(variant["sent"]), str(variant["opened"]),
                                        str(variant["replied"]), str(variant["bounced"]))
                console.print(results)
                stats = await engine.campaign_stats(ws, cid)
                console.rule("stats")
                console.print(stats["contacts"])
                console.print(stats["emails"])
                matches = all(sent_by_day.get(day.isoformat(), 0) == planned.get(day.isoformat(), {"count": 0})["count"]
                              for day in span)
                console.print(f"captured {len(handler.messages)} emails; forecast matched every day: {matches}")
                return {"forecast": forecast, "sent_by_day": dict(sent_by_day), "captured": len(handler.messages),
                        "matches": matches, "stats": stats, "steps": step_stats, "opens": opens,
                        "replies": replies, "bounces": bounces, "holiday": HOLIDAY.isoformat()}
    finally:
        controller.stop()


def main(console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(run_demo(console or Console()))
