"""A FluenzR-style workflow keeps what its nodes say, and refuses what it does not understand.

Given a workflow whose email nodes use `body`, `trackOpens`/`trackClicks` and whose delay node
uses `businessDays`; when it is created and sent; then the steps carry the body, the business-day
delay and the node ids, the second email (tracking off for its node) has no open pixel while the
first has one, and stats/steps and activity report each step's node_id; unknown node data is 422.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import CampaignEngine, ManualClock
from engine.errors import ValidationFailed
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00"}


def workflow(**extra: object) -> dict[str, object]:
    return {"nodes": [{"id": "start", "type": "start"},
                      {"id": "hello", "type": "email", "data": {"subject": "Hi", "body": "<p>one</p>",
                                                                "trackOpens": True, **extra}},
                      {"id": "wait", "type": "delay", "data": {"days": 1, "businessDays": True}},
                      {"id": "again", "type": "email", "data": {"subject": "", "body": "<p>two</p>",
                                                                "trackOpens": False}},
                      {"id": "end", "type": "end"}],
            "edges": [{"from": "start", "to": "hello"}, {"from": "hello", "to": "wait"},
                      {"from": "wait", "to": "again"}, {"from": "again", "to": "end"}]}


async def test_workflow_node_data_is_kept(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    contact = (await eng.create_contact(ws, {"email": "ann@corp.io"}))["id"]
    with pytest.raises(ValidationFailed) as refused:
        await eng.create_campaign(ws, {"name": "bad", "sender_ids": [sid], "workflow": workflow(colour="red")})
    assert refused.value.details["errors"][0]["field"] == "workflow.nodes.1.data.colour"
    cmp = await eng.create_campaign(ws, {"name": "wf", "sender_ids": [sid], "schedule": ALWAYS,
                                         "settings": {"track_opens": False}, "workflow": workflow()})
    steps = cmp["steps"]
    assert [s["node_id"] for s in steps] == ["hello", "again"]
    assert steps[0]["body_html"] == "<p>one</p>" and steps[1]["delay"]["business_days"] is True
    await eng.enroll(ws, cmp["id"], {"contact_ids": [contact]})
    await eng.launch_campaign(ws, cmp["id"])
    for _ in range(400):
        report = await eng.tick()
        if len(sink.messages) == 2 or report.next_due_at is None:
            break
        clock.set(max(report.next_due_at, clock.now() + timedelta(seconds=1)))
    first, second = (m.data.decode() for m in sink.messages)
    assert "/t/o/" in first and "/t/o/" not in second  # per-node tracking over the campaign's setting
    assert [s["node_id"] for s in await eng.campaign_step_stats(ws, cmp["id"])] == ["hello", "again"]
    activity = (await eng.campaign_activity(ws, cmp["id"], type="email.sent"))["data"]
    assert [item["node_id"] for item in activity] == ["hello", "again"]
