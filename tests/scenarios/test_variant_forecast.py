"""A/B variants in the forecast and the activity feed: ManualClock, the real SMTP sink, tick().

Given a campaign whose step 1 has two variants and an auto-winner rule, and some opens already
recorded, the forecast says which variant each email of each day will use, winner switch
included; the engine then sends exactly that. The activity feed names the variant of every email
event, the opens' included.
"""

from __future__ import annotations

import re
from collections import Counter
from email import message_from_bytes, policy
from typing import Any

from engine import CampaignEngine, ManualClock
from tests.delivery.smtp_server import SmtpSink

THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0) Thunderbird/115.0"


async def _campaign(eng: CampaignEngine, sink: SmtpSink, contacts: int, winner: dict[str, Any]) -> tuple[str, str]:
    """Step 1 with variants A and B and ``winner``; step 2 (a day later) without variants; one
    sender sending one email a minute, every day, all day (UTC)."""
    ws = (await eng.create_workspace("acme", monthly_limit=100_000)).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 500,
                                        "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp{i % 3}.io", "first_name": f"P{i}"}))["id"]
           for i in range(contacts)]
    cmp = await eng.create_campaign(ws, {
        "name": "AB forecast", "sender_ids": [sid], "settings": {"track_opens": True},
        "steps": [{"subject": "Default", "body_html": "<p>Hi</p>", "winner": winner,
                   "variants": [{"subject": "Alpha"}, {"subject": "Beta"}]},
                  {"subject": "Later", "body_html": "<p>Again</p>", "delay": {"days": 1}}],
        "schedule": {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                     "start_time": "00:00", "end_time": "23:59", "min_wait_seconds": 60, "max_wait_seconds": 60}})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"]


def _subject_and_open_token(raw: bytes) -> tuple[str, str]:
    msg = message_from_bytes(raw, policy=policy.default)
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    found = re.findall(r'<img src="https://track\.example\.com/t/o/([^"]+)"', html)
    return str(msg["Subject"]), found[0] if found else ""


async def _tick_until(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, sent: int | None = None) -> None:
    """Tick at each next_due_at until ``sent`` messages reached the sink (None: until nothing is due)."""
    for _ in range(500):
        if sent is not None and len(sink.messages) >= sent:
            return
        report = await eng.tick()
        if report.next_due_at is None:
            return
        clock.set(report.next_due_at)
    raise AssertionError("the campaign did not finish within 500 ticks")


def _per_day_variant(forecast: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter({(day["date"], step, variant): n for day in forecast["days"]
                    for step, counts in day["by_variant"].items() for variant, n in counts.items()})


async def test_forecast_tells_each_emails_variant_through_the_winner_switch(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, cid = await _campaign(eng, sink, contacts=12, winner={"metric": "open_rate", "after_sends": 6})
    # given three step-1 emails sent, and every Beta one among them opened
    await _tick_until(eng, clock, sink, sent=3)
    first = [_subject_and_open_token(m.data) for m in sink.messages]
    for subject, token in first:
        if subject == "Beta":
            assert await eng.track_open(token, THUNDERBIRD)
    # when forecasting, then running the engine
    forecast = await eng.forecast(ws, cid, days=3)
    await _tick_until(eng, clock, sink)
    # then it sent, day by day and variant by variant, what the forecast said
    sent = (await eng.list_events(ws, limit=1000, type="email.sent"))["data"]
    assert len(sent) == 24 and forecast["total"] == 21
    actual: Counter[tuple[str, str, str]] = Counter()
    for e in sent[3:]:
        if e["data"]["variant"] is not None:
            actual[(e["recorded_at"][:10], str(e["data"]["step"]), e["data"]["variant"])] += 1
    assert _per_day_variant(forecast) == actual
    # the winner was decided after the 6th send by the opens (only Beta's): a tie at 0 % goes to A
    expected = "B" if "Beta" in [subject for subject, _ in first] else "A"
    won = (await eng.list_events(ws, limit=100, type="campaign.variant_won"))["data"]
    assert [(e["data"]["step"], e["data"]["variant"]) for e in won] == [(1, expected)]
    step_one = [e["data"]["variant"] for e in sent if e["data"]["step"] == 1]
    assert set(step_one[6:]) == {expected}  # so the forecast predicted the switch, not the draw
    assert all(set(day["by_variant"]) <= {"1"} for day in forecast["days"])  # step 2 has no variants


async def test_activity_names_the_variant_of_each_email_event(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, cid = await _campaign(eng, sink, contacts=4, winner={"metric": "open_rate", "after_sends": 100})
    await _tick_until(eng, clock, sink, sent=4)
    for subject, token in [_subject_and_open_token(m.data) for m in sink.messages]:
        assert subject in ("Alpha", "Beta") and await eng.track_open(token, THUNDERBIRD)
    await _tick_until(eng, clock, sink)
    items = (await eng.campaign_activity(ws, cid, limit=500))["data"]
    sent_variant = {(i["enrollment_id"], i["step"]): i["metadata"]["variant"] for i in items
                    if i["type"] == "email.sent"}
    assert len(sent_variant) == 8
    for item in items:
        if item["type"].startswith("enrollment."):
            assert item["variant"] is None
        elif item["step"] == 2:  # a step without variants
            assert item["variant"] is None
        else:  # every event of a step-1 email (scheduled, claimed, sent, opened) names its variant
            assert item["variant"] == sent_variant[(item["enrollment_id"], 1)] in ("A", "B"), item
    opens = [i for i in items if i["type"] == "email.opened"]
    assert len(opens) == 4 and all(i["variant"] in ("A", "B") for i in opens)
    by_subject = Counter(_subject_and_open_token(m.data)[0] for m in sink.messages[:4])
    # (+ drops zero counts: all four may draw the same variant)
    assert Counter(i["variant"] for i in opens) == +Counter({"A": by_subject["Alpha"], "B": by_subject["Beta"]})
