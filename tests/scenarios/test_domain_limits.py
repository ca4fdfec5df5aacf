"""Per-recipient-domain limits through the engine: forecast and tick agree, other domains go on.

Given a campaign allowing 2 emails an hour per recipient domain and per sender, 5 contacts at
gmail.com and 2 at corp.io; when the engine ticks at every next_due_at; then each hour at most 2
go to gmail.com, the corp.io emails are not held back by gmail's limit, and the emails go out
exactly when the forecast said.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from engine import CampaignEngine, ManualClock
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
          "min_wait_seconds": 0, "max_wait_seconds": 0, "max_per_domain_per_hour": 2}


async def test_domain_limit_per_hour(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 100, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    addresses = [f"p{i}@gmail.com" for i in range(5)] + ["a@corp.io", "b@corp.io"]
    ids = [(await eng.create_contact(ws, {"email": address}))["id"] for address in addresses]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": ALWAYS,
                                         "steps": [{"subject": "s", "body_html": "b"}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    forecast = await eng.forecast(ws, cmp["id"], days=1)
    assert forecast["total"] == 7
    start = clock.now()
    hours: Counter[tuple[int, str]] = Counter()
    while True:
        before = len(sink.messages)
        report = await eng.tick()
        for message in sink.messages[before:]:
            hours[(int((clock.now() - start) / timedelta(hours=1)), message.rcpt_tos[0].split("@")[1])] += 1
        if report.next_due_at is None or len(sink.messages) == 7:
            break
        clock.set(max(report.next_due_at, clock.now()))
    assert hours == Counter({(0, "gmail.com"): 2, (0, "corp.io"): 2, (1, "gmail.com"): 2, (2, "gmail.com"): 1})
    assert sum(day["count"] for day in forecast["days"]) == len(sink.messages)
