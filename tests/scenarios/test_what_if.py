"""What-if forecasts: the same planner on changed inputs, nothing stored; and estimated_completion.

Given 10 contacts in a no-wait campaign limited to 2 a day; when it is forecast, then 2 go each
day and the campaign completes on the fifth day; what if 5 a day: it completes on the second;
what if one more sender like the first (each limited to 2 a day): 4 a day; a draft forecast as if
launched shows its sends; the log is the same before and after; bad values are 422.
"""

from __future__ import annotations

import pytest

from engine import CampaignEngine, ManualClock
from engine.errors import ValidationFailed
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
          "min_wait_seconds": 0, "max_wait_seconds": 0}


async def test_what_if_changes_the_forecast_and_nothing_else(eng: CampaignEngine, clock: ManualClock,
                                                            sink: SmtpSink) -> None:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 2, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(10)]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": ALWAYS,
                                         "steps": [{"subject": "s", "body_html": "b"}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    draft = await eng.forecast(ws, cmp["id"], days=7)
    assert draft["total"] == 0 and draft["estimated_completion"] is None
    as_launched = await eng.forecast(ws, cmp["id"], days=7, as_if="launched")
    assert [d["count"] for d in as_launched["days"][:5]] == [2, 2, 2, 2, 2]
    await eng.launch_campaign(ws, cmp["id"])
    base = await eng.forecast(ws, cmp["id"], days=7)
    assert [d["count"] for d in base["days"]] == [2, 2, 2, 2, 2, 0, 0]
    assert base["estimated_completion"] == base["days"][4]["date"]
    assert (await eng.forecast(ws, cmp["id"], days=3))["estimated_completion"] is None  # past the horizon
    wider = await eng.forecast(ws, cmp["id"], days=7, senders_add=1)
    assert [d["count"] for d in wider["days"][:3]] == [4, 4, 2]
    before = await eng.store.last_position()
    capped = await eng.forecast(ws, cmp["id"], days=7, daily_limit=1)
    assert [d["count"] for d in capped["days"]] == [1] * 7 and capped["estimated_completion"] is None
    assert await eng.store.last_position() == before  # nothing stored
    with pytest.raises(ValidationFailed):
        await eng.forecast(ws, cmp["id"], days=7, daily_limit=0)
    with pytest.raises(ValidationFailed):
        await eng.forecast(ws, cmp["id"], days=7, as_if="paused")
    assert await eng.forecast(ws, cmp["id"], days=7) == base


async def test_what_if_over_rest_and_bad_values(eng: CampaignEngine, sink: SmtpSink) -> None:
    import httpx

    from engine import create_app

    ws = await eng.create_workspace("w")
    sid = (await eng.create_sender(ws.id, {"email": "rep@sales.io", "daily_limit": 2, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws.id, {"email": f"p{i}@corp.io"}))["id"] for i in range(6)]
    cmp = await eng.create_campaign(ws.id, {"name": "c", "sender_ids": [sid], "schedule": ALWAYS,
                                            "steps": [{"subject": "s", "body_html": "b"}]})
    await eng.enroll(ws.id, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws.id, cmp["id"])
    headers = {"Authorization": f"Bearer {ws.api_key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url="http://t") as http:
        answer = await http.get(f"/v1/campaigns/{cmp['id']}/forecast", params={"days": 3, "senders_add": 2},
                                headers=headers)
        assert answer.status_code == 200
        assert [d["count"] for d in answer.json()["days"]] == [6, 0, 0]
        assert answer.json()["what_if"] == {"senders_add": 2}
        bad = await http.get(f"/v1/campaigns/{cmp['id']}/forecast", params={"every_minutes": 0}, headers=headers)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
