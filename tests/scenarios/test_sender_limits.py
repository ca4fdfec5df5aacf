"""Sender fields of the second round: warm-up and max_connections, through the engine's public API.

Given a new sender warming up; when its campaign runs for four days, ticking at every next_due_at;
then it sends what the forecast said each day, and ``daily_limit_today`` shows the growing limit.
Given a sender allowed two connections; when a tick sends many emails to a slow server; then the
server never sees more than two sessions from it.
"""

from __future__ import annotations

from datetime import timedelta

from engine import CampaignEngine, ManualClock
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
          "min_wait_seconds": 0, "max_wait_seconds": 0}


async def test_warmup_limits_each_day_as_forecast(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws = (await eng.create_workspace("w")).id
    sender = await eng.create_sender(ws, {"email": "new@sales.io", "daily_limit": 50, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"},
        "warmup": {"start": 2, "increase_per_day": 1, "target": 4}})
    assert sender["warmup"] == {"start": 2, "increase_per_day": 1, "target": 4}
    assert sender["daily_limit_today"] == 2 and sender["max_connections"] == 4
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(12)]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sender["id"]], "schedule": ALWAYS,
                                         "steps": [{"subject": "s", "body_html": "b"}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    forecast = await eng.forecast(ws, cmp["id"], days=4)
    assert [d["count"] for d in forecast["days"]] == [2, 3, 4, 3]
    end = clock.now() + timedelta(days=4) - timedelta(seconds=1)
    per_day: dict[str, int] = {}
    while clock.now() <= end:
        report = await eng.tick()
        day = clock.now().date().isoformat()
        per_day[day] = per_day.get(day, 0) + report.sent
        if report.next_due_at is None:
            break
        clock.set(max(report.next_due_at, clock.now()))
    assert [per_day.get(d["date"], 0) for d in forecast["days"]] == [2, 3, 4, 3]  # as forecast, day by day
    assert len(sink.messages) == 12
    stats = await eng.campaign_stats(ws, cmp["id"])
    assert stats["emails"]["sent"] == 12
    assert (await eng.get_sender(ws, sender["id"]))["daily_limit_today"] == 4  # day 3 of the warm-up


async def test_a_sender_uses_at_most_its_max_connections(eng: CampaignEngine) -> None:
    with SmtpSink(behaviour=SinkBehaviour(stall_at="mail", stall_seconds=0.05)) as sink:
        ws = (await eng.create_workspace("w")).id
        sender = await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 100, "max_connections": 2,
                                              "smtp": {"host": sink.host, "port": sink.port, "security": "none"}})
        ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(12)]
        cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sender["id"]], "schedule": ALWAYS,
                                             "steps": [{"subject": "s", "body_html": "b"}]})
        await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
        await eng.launch_campaign(ws, cmp["id"])
        report = await eng.tick()
        assert report.sent == 12
        assert sink.sessions == 2
        updated = await eng.update_sender(ws, sender["id"], {"max_connections": 1})
        assert updated["max_connections"] == 1
