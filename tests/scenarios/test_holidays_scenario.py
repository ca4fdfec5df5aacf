"""A campaign with a holiday calendar, through the engine API, ManualClock and a real SMTP sink.

Christmas 2026 is a Friday: a French campaign sends nothing that day (nor on its skip date), the
forecast says 0 for those days, business-day follow-ups jump over them, and the engine sends,
day by day, exactly what the forecast said.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine import CampaignEngine, ManualClock
from engine.errors import ValidationFailed
from tests.delivery.smtp_server import SmtpSink

PARIS = ZoneInfo("Europe/Paris")
MONDAY = datetime(2026, 12, 21, 7, 0, tzinfo=UTC)  # 08:00 in Paris, the Monday before Christmas
SCHEDULE = {
    "timezone": "Europe/Paris", "start_time": "09:00", "end_time": "17:00",
    "min_wait_seconds": 600, "max_wait_seconds": 1200, "daily_limit": 15,
    "holidays": "FR", "skip_dates": ["2026-12-31"],
}


async def launch(engine: CampaignEngine, sink: SmtpSink, contacts: int) -> tuple[str, str]:
    ws = (await engine.create_workspace("acme", monthly_limit=100_000)).id
    sender = await engine.create_sender(ws, {
        "email": "rep@sales.io", "from_name": "Rep", "daily_limit": 500,
        "smtp": {"host": sink.host, "port": sink.port, "security": "none"}})
    ids = [(await engine.create_contact(ws, {"email": f"p{i}@corp{i % 3}.io", "first_name": f"P{i}"}))["id"]
           for i in range(contacts)]
    cmp = await engine.create_campaign(ws, {
        "name": "Holidays", "sender_ids": [sender["id"]], "schedule": SCHEDULE,
        "steps": [
            {"subject": "Hello {{first_name}}", "body_html": "<p>Hi</p>", "delay": {"days": 0}},
            {"subject": "", "body_html": "<p>Follow-up</p>", "same_thread": True,
             "delay": {"days": 1, "business_days": True}},
        ]})
    await engine.enroll(ws, cmp["id"], {"contact_ids": ids})
    await engine.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"]


async def test_no_email_on_christmas_and_the_forecast_says_so(
    eng: CampaignEngine, clock: ManualClock, sink: SmtpSink
) -> None:
    clock.set(MONDAY)
    ws, cid = await launch(eng, sink, contacts=40)
    stored = (await eng.get_campaign(ws, cid))["schedule"]
    assert stored["holidays"] == "FR" and stored["skip_dates"] == ["2026-12-31"]

    forecast = await eng.forecast(ws, cid, days=14)
    predicted = {day["date"]: day["count"] for day in forecast["days"]}
    assert predicted["2026-12-25"] == 0  # Christmas
    assert predicted["2026-12-31"] == 0  # the skip date
    assert predicted["2027-01-01"] == 0  # New Year's Day
    assert predicted["2026-12-24"] == 15 and predicted["2026-12-28"] == 15
    assert forecast["total"] == 80

    end = MONDAY + timedelta(days=14)
    while True:
        report = await eng.tick()
        if report.next_due_at is None or report.next_due_at > end:
            break
        assert report.next_due_at.astimezone(PARIS).date().isoformat() not in {"2026-12-25", "2026-12-31"}
        clock.set(report.next_due_at)

    sent: Counter[str] = Counter()
    for event in (await eng.list_events(ws, limit=1000, type="email.sent"))["data"]:
        at = datetime.fromisoformat(event["recorded_at"].replace("Z", "+00:00")).astimezone(PARIS)
        sent[at.date().isoformat()] += 1
    assert len(sink.messages) == 80
    assert sent["2026-12-25"] == 0 and sent["2026-12-31"] == 0 and sent["2027-01-01"] == 0
    assert {day: count for day, count in sent.items() if count} == {d: n for d, n in predicted.items() if n}


async def test_unknown_calendar_is_a_validation_error_naming_the_field(eng: CampaignEngine) -> None:
    ws = (await eng.create_workspace("acme")).id
    for calendar in ("XX", "US-ZZ"):
        with pytest.raises(ValidationFailed) as failure:
            await eng.create_campaign(ws, {"name": "Bad", "schedule": {"holidays": calendar}})
        assert [error["field"] for error in failure.value.errors] == ["schedule.holidays"]
    with pytest.raises(ValidationFailed) as failure:
        await eng.create_campaign(ws, {"name": "Bad", "schedule": {"skip_dates": ["25/12/2026"]}})
    assert [error["field"] for error in failure.value.errors] == ["schedule.skip_dates"]
