"""The key property: a tick loop over the public planner API sends exactly what simulate() forecast.

The tick loop rebuilds the usage from the list of sends at every tick (as the engine does from its
log), builds a fresh queue, and also makes extra calls at random moments before each due time:
those must send nothing and must not move the due time. Every forecast is also checked against
the rules: window, launch_at, spacing, limits, pinned follow-ups and step delays.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.schedule import (
    CampaignPlan,
    Delay,
    QueueItem,
    ScheduleSpec,
    SenderPlan,
    SendRecord,
    SimulatedSend,
    Usage,
    add_delay,
    effective_daily_limit,
    next_fire_at_or_after,
    simulate,
    validate_schedule,
    window_for,
)
from engine.schedule.tzutil import hour_start, local_date, zone
from tests.schedule.factories import utc
from tests.schedule.ticking import Ticker

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")
STARTS = (
    utc(2026, 3, 27, 6),
    utc(2026, 10, 23, 20),
    utc(2026, 3, 6, 10),
    utc(2026, 10, 30, 15),
    utc(2026, 1, 30),
    utc(2026, 12, 23, 12),  # Christmas and the weekend after it
    utc(2026, 7, 12, 3),  # Bastille Day (FR), Independence Day observed (US) just before
)
# Calendars with holidays inside some scenario's four days: FR (Nov 1 and 11, Jul 14, Dec 25),
# US-CA (Mar 31, Jul 3 observed, Dec 25), DE-BY (Dec 25-26), IN (none of these days).
HOLIDAYS = (None, None, "FR", "US-CA", "DE-BY", "IN")
WINDOWS = (("09:00", "17:00"), ("00:00", "24:00"), ("01:30", "03:30"), ("20:00", "24:00"), ("08:15", "12:45"))
CRONS = ("*/20 * * * *", "5,35 * * * *", "*/7 * * * *", "0 * * * *", "10 2 * * *")
CONTACT_ZONES = (None, None, "Asia/Tokyo", "America/Los_Angeles", "Not/AZone")
SENDER_IDS = ("s1", "s2", "s3")

Scenario = dict[str, Any]


@st.composite
def schedules(draw: st.DrawFn, start: datetime) -> ScheduleSpec:
    start_time, end_time = draw(st.sampled_from(WINDOWS))
    raw: dict[str, Any] = {
        "timezone": draw(st.sampled_from(ZONES)),
        "days": sorted(draw(st.sets(st.sampled_from(WEEK), min_size=1)), key=WEEK.index),
        "start_time": start_time,
        "end_time": end_time,
        "max_per_hour": draw(st.sampled_from((None, None, 1, 3))),
        "daily_limit": draw(st.sampled_from((None, None, 2, 5))),
        "max_per_domain_per_hour": draw(st.sampled_from((None, None, 1, 2))),
        "max_per_domain_per_day": draw(st.sampled_from((None, None, 2, 3))),
        "use_contact_timezone": draw(st.booleans()),
        "holidays": draw(st.sampled_from(HOLIDAYS)),
        "skip_dates": [
            (start.date() + timedelta(days=offset)).isoformat()
            for offset in draw(st.sets(st.integers(-1, 4), max_size=3))
        ],
    }
    mode = draw(st.sampled_from(("wait", "every", "cron")))
    if mode == "every":
        raw["every_minutes"] = draw(st.sampled_from((5, 45, 180)))
    elif mode == "cron":
        raw["cron"] = draw(st.sampled_from(CRONS))
        if validate_schedule(raw):  # this cron never fires inside this window
            del raw["cron"]
    low, high = draw(st.sampled_from(((60, 600), (120, 420), (600, 3600), (0, 90))))
    raw["min_wait_seconds"], raw["max_wait_seconds"] = low, high
    if draw(st.booleans()):
        raw["launch_at"] = start + timedelta(hours=draw(st.integers(0, 30)))
    return ScheduleSpec.from_dict(raw)


delays = st.builds(
    Delay,
    days=st.integers(0, 2),
    hours=st.integers(0, 6),
    minutes=st.sampled_from((0, 30)),
    business_days=st.booleans(),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    start = draw(st.sampled_from(STARTS))
    senders = {
        sid: SenderPlan(
            sender_id=sid,
            daily_limit=draw(st.sampled_from((None, None, 1, 4, 10))),
            daily_limit_variation_pct=draw(st.sampled_from((0, 30, 100))),
            active=sid == "s1" or draw(st.sampled_from((True, True, False))),
        )
        for sid in SENDER_IDS
    }
    campaigns: dict[str, CampaignPlan] = {}
    queue: list[QueueItem] = []
    seq = 0
    for index in range(draw(st.integers(1, 2))):
        cid = f"c{index + 1}"
        steps = tuple(draw(st.lists(delays, min_size=1, max_size=3)))
        sender_ids = tuple(draw(st.lists(st.sampled_from(SENDER_IDS), min_size=1, max_size=3, unique=True)))
        campaigns[cid] = CampaignPlan(
            campaign_id=cid,
            workspace_id=draw(st.sampled_from(("w1", "w2"))),
            schedule=draw(schedules(start)),
            sender_ids=sender_ids,
            step_delays=steps,
            active=index == 0 or draw(st.sampled_from((True, True, True, False))),
        )
        for n in range(draw(st.integers(1, 8))):
            seq += 1
            step = draw(st.integers(1, len(steps)))
            queue.append(
                QueueItem(
                    email_id=f"{cid}-e{n}",
                    enrollment_id=f"{cid}-n{n}",
                    campaign_id=cid,
                    contact_id=f"{cid}-k{n}",
                    step=step,
                    due_at=start + timedelta(minutes=draw(st.integers(-2880, 2880))),
                    priority=draw(st.integers(0, 2)),
                    sender_id=None if step == 1 else draw(st.sampled_from(sender_ids)),
                    contact_timezone=draw(st.sampled_from(CONTACT_ZONES)),
                    seq=draw(st.sampled_from((seq, 0))),
                    domain=draw(st.sampled_from(("gmail.com", "corp.io", "yahoo.com", None))),
                )
            )
    history = [
        SendRecord(
            campaign_id=draw(st.sampled_from(sorted(campaigns))),
            sender_id=draw(st.sampled_from(SENDER_IDS)),
            workspace_id=draw(st.sampled_from(("w1", "w2"))),
            sent_at=start - timedelta(minutes=draw(st.integers(0, 3000))),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    monthly = {"w1": draw(st.sampled_from((None, None, 5, 20))), "w2": draw(st.sampled_from((None, 8)))}
    fractions = draw(st.lists(st.floats(0.01, 0.99), max_size=8))
    return {
        "start": start,
        "until": start + timedelta(days=4),
        "senders": senders,
        "campaigns": campaigns,
        "queue": queue,
        "history": history,
        "monthly": monthly,
        "fractions": fractions,
    }


def tick_loop(sc: Scenario) -> list[SimulatedSend]:
    ticker = Ticker(sc["campaigns"], sc["senders"], list(sc["queue"]), list(sc["history"]), sc["monthly"])
    fractions = list(sc["fractions"])
    at: datetime | None = sc["start"]
    while at is not None and at <= sc["until"]:
        ticker.tick(at)
        due = ticker.next_due
        if due is not None and fractions:
            extra = at + (due - at) * fractions.pop()
            if at < extra < due:
                assert ticker.tick(extra).sends == (), "a call before next_due_at sent something"
                assert ticker.next_due == due, "an idle call moved next_due_at"
        at = ticker.next_due
    return ticker.simulated()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_tick_loop_sends_exactly_what_simulate_forecast(sc: Scenario) -> None:
    usage = Usage.from_sends(sc["history"], sc["campaigns"])
    forecast = simulate(sc["start"], sc["until"], sc["queue"], sc["campaigns"], sc["senders"], usage, sc["monthly"])
    assert tick_loop(sc) == forecast
    check_rules(sc, forecast, usage)
    shuffled = dict(reversed(list(sc["campaigns"].items())))
    again = simulate(sc["start"], sc["until"], sc["queue"][::-1], shuffled, sc["senders"], usage, sc["monthly"])
    assert again == forecast, "the order of the inputs changed the forecast"


def check_rules(sc: Scenario, sends: list[SimulatedSend], usage: Usage) -> None:
    campaigns: dict[str, CampaignPlan] = sc["campaigns"]
    senders: dict[str, SenderPlan] = sc["senders"]
    contact_tz = {i.enrollment_id: i.contact_timezone for i in sc["queue"]}
    domain_of = {i.enrollment_id: i.domain for i in sc["queue"]}
    first_due = {i.enrollment_id: i for i in sc["queue"]}
    previous: dict[str, SimulatedSend] = {}
    pair_sends: dict[tuple[str, str], int] = {}
    for s in sends:
        c = campaigns[s.campaign_id]
        spec = c.schedule
        sender = senders[s.sender_id]
        assert c.active and sender.active and s.sender_id in c.sender_ids
        assert window_for(spec, contact_tz[s.enrollment_id]).contains(s.at)
        closed = spec.closed_days  # never on a skip date or holiday of the window's own zone
        window_zone = zone(window_for(spec, contact_tz[s.enrollment_id]).timezone)
        assert closed is None or not closed.is_closed(local_date(s.at, window_zone))
        assert spec.launch_at is None or s.at >= spec.launch_at
        # Limits: nothing is sent into a full bucket.
        tz = zone(spec.timezone)
        if spec.max_per_hour is not None:
            assert usage.sent_by_campaign_in_hour(c.campaign_id, hour_start(s.at, tz)) < spec.max_per_hour
        if spec.daily_limit is not None:
            assert usage.sent_by_campaign_on(c.campaign_id, local_date(s.at, tz)) < spec.daily_limit
        limit = effective_daily_limit(sender, s.at.date())
        assert limit is None or usage.sent_by_sender_on(s.sender_id, s.at.date()) < limit
        monthly = sc["monthly"].get(c.workspace_id)
        assert monthly is None or usage.sent_by_workspace_in_month(c.workspace_id, s.at.year, s.at.month) < monthly
        domain = domain_of[s.enrollment_id]
        if domain is not None and spec.max_per_domain_per_hour is not None:
            assert usage.sent_to_domain_in_hour(s.sender_id, domain, hour_start(s.at, tz)) < \
                spec.max_per_domain_per_hour
        if domain is not None and spec.max_per_domain_per_day is not None:
            assert usage.sent_to_domain_on(s.sender_id, domain, local_date(s.at, tz)) < spec.max_per_domain_per_day
        # Spacing of the pair.
        pair = (s.campaign_id, s.sender_id)
        last = usage.last_send(*pair)
        if last is not None:
            assert s.at > last.at
            if spec.cron is None and spec.every_minutes is not None:
                assert s.at - last.at >= timedelta(minutes=spec.every_minutes)
            elif spec.cron is None:
                assert s.at - last.at >= timedelta(seconds=spec.min_wait_seconds)
            elif pair_sends.get(pair):
                assert next_fire_at_or_after(spec.cron, spec.timezone, s.at) == s.at
        pair_sends[pair] = pair_sends.get(pair, 0) + 1
        # Steps: in order, through the same sender, after their delay.
        before = previous.get(s.enrollment_id)
        if before is None:
            queued = first_due[s.enrollment_id]
            assert s.step == queued.step and s.at >= queued.due_at
            assert queued.sender_id in (None, s.sender_id)
        else:
            assert s.step == before.step + 1 and s.sender_id == before.sender_id
            assert s.at >= add_delay(before.at, c.step_delays[before.step], spec.timezone, spec.closed_days)
        previous[s.enrollment_id] = s
        usage = usage.record(
            campaign_id=s.campaign_id,
            sender_id=s.sender_id,
            workspace_id=c.workspace_id,
            at=s.at,
            timezone=spec.timezone,
            domain=domain_of[s.enrollment_id],
        )
