"""``campaign-engine demo``: a whole multi-step campaign over a simulated week, in seconds.

Everything is real except time: a throwaway SQLite file, a local aiosmtpd capture server on a free
loopback port, and a ManualClock moved to each moment the engine says something is due.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(console: Console, contacts: int = 50, days: int = 7) -> dict[str, Any]:
    handler = CaptureHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    tz = ZoneInfo("Europe/Paris")
    start = datetime(2026, 1, 5, 7, 30, tzinfo=UTC)  # a Monday morning, before the window opens
    clock = ManualClock(start)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
            async with CampaignEngine(url, clock=clock, secret_key="demo-secret-key-0123456789abcdef",
                                      public_url="http://127.0.0.1:8080") as engine:
                ws = (await engine.create_workspace("demo", monthly_limit=10_000)).id
                senders = [(await engine.create_sender(ws, {
                    "email": f"{name}@demo-sender.com", "from_name": f"{name.title()} from Demo", "daily_limit": 40,
                    "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}))["id"]
                    for name in ("alice", "bob")]
                ids = []
                for i in range(contacts):
                    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
                    domain = COMPANIES[i % len(COMPANIES)].split()[0].lower()
                    ids.append((await engine.create_contact(ws, {
                        "email": f"{first.lower()}.{last.lower()}{i}@{domain}.com",
                        "first_name": first, "last_name": last, "company": COMPANIES[i % len(COMPANIES)]}))["id"])
                campaign = await engine.create_campaign(ws, {
                    "name": "Demo outreach", "sender_ids": senders,
                    "schedule": {"timezone": "Europe/Paris", "start_time": "09:00", "end_time": "17:00",
                                 "min_wait_seconds": 300, "max_wait_seconds": 900},
                    "settings": {"track_opens": True, "track_clicks": True},
                    "steps": [
                        {"subject": "Quick question, {{first_name|there}}",
                         "body_html": "<p>Hi {{first_name|there}},</p><p>Does {{company|your team}} still sort "
                                      "inbound mail by hand? <a href=\"https://example.com/tour\">A 2-minute tour</a>"
                                      ".</p>"},
                        {"subject": "Following up", "body_html": "<p>Just bumping this, {{first_name}}.</p>",
                         "delay": {"days": 2, "business_days": True}},
                        {"subject": "Last note", "body_html": "<p>I'll stop here. Thanks, {{first_name}}!</p>",
                         "delay": {"days": 3}},
                    ]})
                cid = campaign["id"]
                await engine.enroll(ws, cid, {"contact_ids": ids})
                await engine.launch_campaign(ws, cid)
                forecast = await engine.forecast(ws, cid, days=days)
                end = start + timedelta(days=days)
                sent_by_day: Counter[str] = Counter()
                while True:
                    report = await engine.tick()
                    if report.sent:
                        sent_by_day[clock.now().astimezone(tz).date().isoformat()] += report.sent
                    if report.next_due_at is None or report.next_due_at >= end:
                        break
                    clock.set(report.next_due_at)
                table = Table(title="Sends per day: forecast vs. actual (Europe/Paris)")
                for col in ("date", "forecast", "sent", "by step (forecast)"):
                    table.add_column(col)
                for day in forecast["days"]:
                    steps = ", ".join(f"step {k}: {v}" for k, v in day["by_step"].items()) or "-"
                    table.add_row(day["date"], str(day["count"]), str(sent_by_day.get(day["date"], 0)), steps)
                console.print(table)
                for raw in handler.messages[:1] + handler.messages[-1:]:
                    msg = email.message_from_bytes(raw, policy=email.policy.default)
                    text = msg.get_body(preferencelist=("plain",))
                    console.rule(f"{msg['From']} -> {msg['To']}")
                    console.print(f"Subject: {msg['Subject']}\nMessage-ID: {msg['Message-ID']}")
                    if msg["In-Reply-To"]:
                        console.print(f"In-Reply-To: {msg['In-Reply-To']}")
                    console.print(text.get_content().strip() if text is not None else "")
                stats = await engine.campaign_stats(ws, cid)
                console.rule("stats")
                console.print(stats["contacts"])
                console.print(stats["emails"])
                matches = all(sent_by_day.get(d["date"], 0) == d["count"] for d in forecast["days"])
                console.print(f"captured {len(handler.messages)} emails; forecast matched every day: {matches}")
                return {"forecast": forecast, "sent_by_day": dict(sent_by_day), "captured": len(handler.messages),
                        "matches": matches, "stats": stats}
    finally:
        controller.stop()


def main(console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(run_demo(console or Console()))
