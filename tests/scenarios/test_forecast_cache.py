"""The fast forecast: each campaign's queue read only as far as it can go, and results kept per log position.

Given two campaigns sharing two senders limited to 2 emails a day, contacts in three timezones
enrolled at three priorities, and some emails already sent (so follow-ups are pinned to their
sender); when the workspace is forecast, then only part of the queue is read, and the forecast
is the one the planner makes over the whole queue (on SQLite and PostgreSQL). Given a forecast;
when it is asked again with nothing changed it is the same; when a contact is enrolled, or the
clock passes the first predicted send with no tick, or a what-if is asked, then the answer is
worked out anew, equal to a forecast made from scratch; and no more than ``CACHE_SIZE``
forecasts are kept.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from engine import CampaignEngine, ManualClock
from engine.schedule import forecast_by_day, forecast_range, simulate
from engine.service.forecast import CACHE_SIZE, ForecastService, most_sends
from engine.service.planner_inputs import load_inputs, load_plans, load_queue
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
          "min_wait_seconds": 0, "max_wait_seconds": 0}
WORKDAYS = {"timezone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "09:00",
            "end_time": "17:00", "min_wait_seconds": 60, "max_wait_seconds": 600, "use_contact_timezone": True}
TWO_STEPS = [{"subject": "s1", "body_html": "b1"}, {"subject": "s2", "body_html": "b2", "delay": {"days": 1}}]


async def _workspace(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> tuple[str, list[str]]:
    """Two campaigns on two senders (2 a day each), 120 contacts in 3 zones at 3 priorities enrolled
    a few at a time (so their due times differ), and a day sent."""
    ws = (await eng.create_workspace("w", monthly_limit=100_000)).id
    senders = [(await eng.create_sender(ws, {"email": f"rep{i}@sales.io", "daily_limit": 2, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"] for i in range(2)]
    zones = [None, "America/New_York", "Asia/Tokyo"]
    await eng.import_contacts(ws, [{"email": f"p{i}@corp{i % 4}.io", "timezone": zones[i % 3]} for i in range(120)])
    people = [c["id"] for c in (await eng.list_contacts(ws, per_page=200))["data"]]
    campaigns = []
    for name, schedule in (("always", ALWAYS), ("workdays", WORKDAYS)):
        cid = (await eng.create_campaign(ws, {"name": name, "sender_ids": senders, "schedule": schedule,
                                              "steps": TWO_STEPS}))["id"]
        await eng.launch_campaign(ws, cid)
        campaigns.append(cid)
    for start in range(0, len(people), 6):
        chosen, priority = people[start:start + 6], (0, 5, 1)[start // 6 % 3]
        await eng.enroll(ws, campaigns[0], {"contact_ids": chosen[:3], "priority": priority})
        await eng.enroll(ws, campaigns[1], {"contact_ids": chosen[3:], "priority": priority})
        clock.advance(timedelta(seconds=1))
    for _ in range(40):  # a day of sending: follow-ups pinned to the sender of their first step
        report = await eng.tick()
        if report.next_due_at is None or report.next_due_at > clock.now() + timedelta(hours=20):
            break
        clock.set(max(report.next_due_at, clock.now()))
    clock.advance(timedelta(hours=20))
    return ws, campaigns


async def _whole_queue_forecast(eng: CampaignEngine, ws: str, days: int) -> dict[str, Any]:
    """The workspace forecast the planner makes over every queued email (no bound on the reads)."""
    now = eng.clock.now()
    start, until = forecast_range(now, "UTC", days)
    async with eng.store.reading() as conn:
        inputs = await load_inputs(conn, now, workspace_id=ws)
    sends = simulate(now, until, inputs.items, inputs.campaigns, inputs.senders, inputs.usage, inputs.monthly_limits)
    by_day = forecast_by_day(sends, "UTC", start, days)
    return {"timezone": "UTC", "days": by_day, "total": sum(d["count"] for d in by_day)}


async def test_a_bounded_read_forecasts_what_the_whole_queue_does(db_url: str, clock: ManualClock,
                                                                  sink: SmtpSink) -> None:
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as eng:
        await _bounded_read_plays_the_whole_queue(eng, clock, sink)


async def _bounded_read_plays_the_whole_queue(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, _ = await _workspace(eng, clock, sink)
    now = clock.now()
    _, until = forecast_range(now, "UTC", 1)
    async with eng.store.reading() as conn:
        _, campaigns, senders, _ = await load_plans(conn, ws)
        bounds = {c: most_sends(plan, senders, now, until) for c, plan in campaigns.items()}
        assert bounds and all(bound == 2 * 2 for bound in bounds.values())  # 2 senders x 2 a day x 1 day
        whole = await load_queue(conn, campaigns)
        bounded = await load_queue(conn, campaigns, {c: b for c, b in bounds.items() if b is not None})
    assert {item.sender_id for item in whole} - {None}  # some follow-ups are pinned
    assert len(bounded) < len(whole)
    assert {item.email_id for item in bounded} <= {item.email_id for item in whole}
    for days in (1, 3, 7):
        _, until = forecast_range(now, "UTC", days)
        async with eng.store.reading() as conn:
            inputs = await load_inputs(conn, now, workspace_id=ws)
            played = simulate(now, until, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                              inputs.monthly_limits)
            # the tightest bound there is: each campaign's own count of sends in the whole queue's play
            sent = Counter(send.campaign_id for send in played)
            assert all(sent[c] <= (most_sends(plan, senders, now, until) or 0) for c, plan in campaigns.items())
            tight = await load_queue(conn, campaigns, {c: sent[c] for c in campaigns})
        assert len(tight) < len(inputs.items) or days == 1
        assert simulate(now, until, tight, inputs.campaigns, inputs.senders, inputs.usage,
                        inputs.monthly_limits) == played  # the very same emails, senders and times
        assert await eng.workspace_forecast(ws, days) == await _whole_queue_forecast(eng, ws, days)


async def test_the_kept_forecast_answers_until_the_workspace_or_the_time_moves(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, (cid, _) = await _workspace(eng, clock, sink)

    async def fresh(**what_if: Any) -> dict[str, Any]:
        return await ForecastService(eng.store, clock).forecast(ws, cid, 7, **what_if)

    first = await eng.forecast(ws, cid, 7)
    assert first == await fresh() and first["total"] > 0
    before = await eng.store.last_position()
    assert await eng.forecast(ws, cid, 7) == first
    assert await eng.store.last_position() == before  # a forecast stores nothing
    capped = await eng.forecast(ws, cid, 7, daily_limit=1)
    assert capped == await fresh(daily_limit=1) and capped["total"] < first["total"]
    assert await eng.forecast(ws, cid, 7) == first

    newcomer = (await eng.create_contact(ws, {"email": "late@corp.io"}))["id"]
    await eng.enroll(ws, cid, {"contact_ids": [newcomer], "priority": 9})
    moved = await eng.forecast(ws, cid, 7)
    assert moved == await fresh() and moved != first

    clock.advance(timedelta(days=1, hours=3))  # past the first predicted send, and nothing ticked
    later = await eng.forecast(ws, cid, 7)
    assert later == await fresh() and later["days"][0]["date"] != moved["days"][0]["date"]


async def test_no_more_than_cache_size_forecasts_are_kept(eng: CampaignEngine) -> None:
    ws = (await eng.create_workspace("w")).id
    cid = (await eng.create_campaign(ws, {"name": "c", "sender_ids": [], "schedule": ALWAYS,
                                          "steps": TWO_STEPS}))["id"]
    service = ForecastService(eng.store, eng.clock)
    for days in range(1, 91):
        for limit in range(1, 4):
            await service.forecast(ws, cid, days, daily_limit=limit)
    assert len(service._kept) == CACHE_SIZE
