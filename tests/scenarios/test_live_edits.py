"""Live edits: an active campaign's schedule, settings, senders and unsent steps change, and the
next tick (and the forecast) use them at once; steps already sent cannot change.

Given an active campaign that sent step 1 to some contacts; when its schedule is narrowed to
days that exclude today, then nothing more goes today and the forecast says so; when step 2's
subject changes, the follow-ups carry the new one; editing step 1 is refused.
"""

from __future__ import annotations

from datetime import timedelta

from engine import CampaignEngine, ManualClock
from engine.errors import ValidationFailed
from tests.delivery.smtp_server import SmtpSink

ALL_DAY = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
           "every_minutes": 10}


async def test_active_campaign_edits_take_effect_at_the_next_tick(eng: CampaignEngine, clock: ManualClock,
                                                                  sink: SmtpSink) -> None:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(4)]
    steps = [{"subject": "one", "body_html": "a"}, {"subject": "two", "body_html": "b", "delay": {"days": 1}}]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": ALL_DAY, "steps": steps})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    assert (await eng.tick()).sent == 1
    # today is a Monday: a schedule without Mondays stops today's sending at once
    await eng.set_schedule(ws, cmp["id"], {**ALL_DAY, "days": ["tue", "wed", "thu", "fri"]})
    forecast = await eng.forecast(ws, cmp["id"], days=2)
    assert forecast["days"][0]["count"] == 0 and forecast["days"][1]["count"] > 0
    clock.advance(timedelta(minutes=30))
    assert (await eng.tick()).sent == 0
    try:
        await eng.update_campaign(ws, cmp["id"], {"steps": [{"subject": "changed", "body_html": "a"}, steps[1]]})
        raise AssertionError("a sent step was changed")
    except ValidationFailed:
        pass
    await eng.update_campaign(ws, cmp["id"], {"steps": [steps[0], {**steps[1], "subject": "two, edited"}]})
    for _ in range(400):  # tick through the week at every next_due_at
        report = await eng.tick()
        if report.next_due_at is None or clock.now() > report.next_due_at + timedelta(days=7):
            break
        clock.set(max(report.next_due_at, clock.now()))
        if len(sink.messages) == 8:
            break
    subjects = sorted(str(m.headers["Subject"]) for m in sink.messages)
    assert subjects == ["one"] * 4 + ["two, edited"] * 4
