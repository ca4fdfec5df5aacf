"""Evergreen campaigns stay active with nothing open, take contacts at any time, and end when told.

Given an evergreen campaign; when its only enrollment completes, then the campaign stays active; a
contact enrolled a day later is sent to; ``complete`` ends it (over REST too); a plain campaign in
the same state completes by itself.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from engine import CampaignEngine, ManualClock, create_app
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00"}


async def test_evergreen_stays_active_until_completed(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws = await eng.create_workspace("w")
    sid = (await eng.create_sender(ws.id, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    first, later, plain_contact = [(await eng.create_contact(ws.id, {"email": f"p{i}@corp.io"}))["id"]
                                   for i in range(3)]
    step = [{"subject": "s", "body_html": "b"}]
    green = await eng.create_campaign(ws.id, {"name": "g", "sender_ids": [sid], "schedule": ALWAYS, "steps": step,
                                              "settings": {"evergreen": True}})
    plain = await eng.create_campaign(ws.id, {"name": "p", "sender_ids": [sid], "schedule": ALWAYS, "steps": step})
    await eng.enroll(ws.id, green["id"], {"contact_ids": [first]})
    await eng.enroll(ws.id, plain["id"], {"contact_ids": [plain_contact]})
    await eng.launch_campaign(ws.id, green["id"])
    await eng.launch_campaign(ws.id, plain["id"])
    for _ in range(3):
        await eng.tick()
        clock.advance(timedelta(minutes=10))
    assert (await eng.get_campaign(ws.id, plain["id"]))["status"] == "completed"
    assert (await eng.get_campaign(ws.id, green["id"]))["status"] == "active"
    clock.advance(timedelta(days=1))
    await eng.enroll(ws.id, green["id"], {"contact_ids": [later]})
    await eng.tick()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["p0@corp.io", "p1@corp.io", "p2@corp.io"]
    assert (await eng.get_campaign(ws.id, green["id"]))["status"] == "active"
    headers = {"Authorization": f"Bearer {ws.api_key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url="http://t") as http:
        done = await http.post(f"/v1/campaigns/{green['id']}/complete", headers=headers)
        assert done.status_code == 200 and done.json()["status"] == "completed"
        again = await http.post(f"/v1/campaigns/{green['id']}/complete", headers=headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
