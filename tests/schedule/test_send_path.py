"""Rules of the second-round send path, at the planner level.

Given a queue, campaigns, senders and usage; when the planner runs; then:
- a pair with no wait between sends sends everything due at once, rotating over its senders;
- a tick that takes its sends in bounded batches at one instant sends exactly what one unbounded
  call (the forecast) sends;
- a cron schedule sends at its fire times only, after downtime too;
- usage cut down to the buckets that contain `now` (what the engine reads from its counters)
  plans exactly like the usage of the whole history.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.schedule import (
    PlanRound,
    QueueItem,
    SenderPlan,
    SendRecord,
    Usage,
    Warmup,
    effective_daily_limit,
    plan,
    simulate,
)
from engine.schedule.tzutil import hour_start, local_date, zone
from tests.schedule.factories import by_id, campaign, item, sender, utc
from tests.schedule.test_properties import Scenario, scenarios
from tests.schedule.ticking import Ticker

MONDAY = utc(2026, 1, 5)
ALL_DAY = {"days": ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "start_time": "00:00", "end_time": "24:00"}


def test_zero_wait_pair_sends_all_that_is_due_at_once_in_rotation() -> None:
    campaigns = by_id(campaign(senders=("s1", "s2"), min_wait_seconds=0, max_wait_seconds=0, **ALL_DAY))
    senders = by_id(sender("s1"), sender("s2"))
    queue = [item(f"e{i}", MONDAY) for i in range(5)]
    result = plan(MONDAY, queue, campaigns, senders, Usage(), {})
    assert [a.item.email_id for a in result.sends] == ["e0", "e1", "e2", "e3", "e4"]
    assert [a.sender_id for a in result.sends] == ["s1", "s2", "s1", "s2", "s1"]
    # limits still hold inside the burst
    limited = by_id(sender("s1", limit=1), sender("s2", limit=1))
    assert len(plan(MONDAY, queue, campaigns, limited, Usage(), {}).sends) == 2


def test_spaced_pair_still_sends_once_per_instant() -> None:
    campaigns = by_id(campaign(senders=("s1",), min_wait_seconds=0, max_wait_seconds=60, **ALL_DAY))
    queue = [item(f"e{i}", MONDAY) for i in range(3)]
    assert len(plan(MONDAY, queue, campaigns, by_id(sender("s1")), Usage(), {}).sends) <= 3
    every = by_id(campaign(senders=("s1",), every_minutes=1, **ALL_DAY))
    assert len(plan(MONDAY, queue, every, by_id(sender("s1")), Usage(), {}).sends) == 1


def test_cron_waits_for_its_next_fire_time_after_downtime() -> None:
    campaigns = by_id(campaign(cron="*/15 * * * *", **ALL_DAY))
    senders = by_id(sender("s1"))
    usage = Usage.from_sends([SendRecord("c1", "s1", "w1", MONDAY.replace(hour=9))], campaigns)
    queue = [item("x", MONDAY.replace(hour=9))]
    late = MONDAY.replace(hour=9, minute=20)  # the 09:15 fire passed while nobody ticked
    result = plan(late, queue, campaigns, senders, usage, {})
    assert result.sends == ()
    assert result.next_due_at == MONDAY.replace(hour=9, minute=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(min_value=1, max_value=3))
def test_batches_at_one_instant_send_what_one_call_sends(sc: Scenario, batch: int) -> None:
    usage = Usage.from_sends(sc["history"], sc["campaigns"])
    at = sc["start"]
    whole = plan(at, sc["queue"], sc["campaigns"], sc["senders"], usage, sc["monthly"]).sends
    taken = []
    queue = list(sc["queue"])
    while True:  # each batch is a new tick at the same instant: fresh round, usage as it was left
        round_ = PlanRound(at, queue, sc["campaigns"], sc["senders"], usage, sc["monthly"])
        sends = round_.take(batch)
        if not sends:
            break
        taken.extend(sends)
        usage = round_.usage
        gone = {a.item.email_id for a in sends}
        queue = [i for i in queue if i.email_id not in gone]
    assert [(a.item.email_id, a.sender_id) for a in taken] == [(a.item.email_id, a.sender_id) for a in whole]


def current_buckets(usage: Usage, sc: Scenario) -> Usage:
    """What the engine reads from its counters at `start`: only buckets that contain it or come later
    (and, of campaign buckets, only those of campaigns being planned)."""
    now = sc["start"]
    zones = {cid: zone(c.schedule.timezone) for cid, c in sc["campaigns"].items()}
    return Usage(
        {k: v for k, v in usage.sender_days.items() if k[1] >= now.date()},
        {k: v for k, v in usage.campaign_days.items() if k[0] in zones and k[1] >= local_date(now, zones[k[0]])},
        {k: v for k, v in usage.campaign_hours.items() if k[0] in zones and k[1] >= hour_start(now, zones[k[0]])},
        {k: v for k, v in usage.workspace_months.items() if (k[1], k[2]) >= (now.year, now.month)},
        usage.last_sends,
        usage.last_senders,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_usage_of_current_buckets_plans_like_the_whole_history(sc: Scenario) -> None:
    full = Usage.from_sends(sc["history"], sc["campaigns"])
    cut = current_buckets(full, sc)
    args = (sc["queue"], sc["campaigns"], sc["senders"])
    assert simulate(sc["start"], sc["until"], *args, cut, sc["monthly"]) == \
        simulate(sc["start"], sc["until"], *args, full, sc["monthly"])
    later = sc["start"] + timedelta(days=3)
    assert simulate(later, later + timedelta(days=2), *args, current_buckets(full, {**sc, "start": later}),
                    sc["monthly"]) == simulate(later, later + timedelta(days=2), *args, full, sc["monthly"])


def test_warmup_grows_from_the_first_send_day_and_the_tick_loop_agrees() -> None:
    """Given a new sender warming up (2, +1 a day, up to 4) under a daily limit of 50; when a
    no-wait campaign has 20 emails due; then it sends 2, 3, 4, 4 on its first four days, as the
    forecast says and as ticking at every next_due_at does."""
    warm = {"s1": SenderPlan("s1", daily_limit=50, warmup=Warmup(2, 1, 4))}
    campaigns = by_id(campaign(senders=("s1",), min_wait_seconds=0, max_wait_seconds=0, **ALL_DAY))
    queue = [item(f"e{i:02d}", MONDAY + timedelta(hours=8)) for i in range(20)]
    until = MONDAY + timedelta(days=4) - timedelta(microseconds=1)
    forecast = simulate(MONDAY, until, queue, campaigns, warm, Usage(), {})
    per_day = Counter(send.at.date() for send in forecast)
    assert [per_day[MONDAY.date() + timedelta(days=n)] for n in range(4)] == [2, 3, 4, 4]
    ticker = Ticker(campaigns, warm, list(queue))
    ticker.run(MONDAY, until)
    assert ticker.simulated() == forecast
    # once the sender has a first send day of its own, the days count from it
    known = SenderPlan("s1", daily_limit=50, warmup=Warmup(2, 1, 4), first_send_day=MONDAY.date())
    assert effective_daily_limit(known, MONDAY.date() + timedelta(days=1)) == 3
    assert effective_daily_limit(known, MONDAY.date() + timedelta(days=30)) == 4
    capped = SenderPlan("s1", daily_limit=3, warmup=Warmup(2, 1, 10), first_send_day=MONDAY.date())
    assert effective_daily_limit(capped, MONDAY.date() + timedelta(days=5)) == 3


def test_per_domain_limit_holds_back_only_that_domain() -> None:
    """Given 5 emails to gmail.com ranked before 2 to corp.io and at most 2 an hour per domain;
    when the no-wait campaign runs from 09:00; then 2 gmail and both corp go at 09:00 (gmail's
    limit never delays corp), 2 gmail at 10:00, the last at 11:00, and the forecast agrees."""
    campaigns = by_id(campaign(senders=("s1",), min_wait_seconds=0, max_wait_seconds=0, max_per_domain_per_hour=2,
                               **ALL_DAY))
    senders = by_id(sender("s1", limit=None))
    nine = MONDAY.replace(hour=9)
    queue = [QueueItem(email_id=f"g{i}", enrollment_id=f"g{i}", campaign_id="c1", contact_id=f"g{i}", step=1,
                       due_at=nine, priority=1, domain="gmail.com") for i in range(5)]
    queue += [QueueItem(email_id=f"k{i}", enrollment_id=f"k{i}", campaign_id="c1", contact_id=f"k{i}", step=1,
                        due_at=nine, domain="corp.io") for i in range(2)]
    first = plan(nine, queue, campaigns, senders, Usage(), {})
    assert sorted(a.item.email_id for a in first.sends) == ["g0", "g1", "k0", "k1"]
    assert first.next_due_at == MONDAY.replace(hour=10)
    forecast = simulate(nine, MONDAY.replace(hour=23), queue, campaigns, senders, Usage(), {})
    assert [(send.email_id, send.at.hour) for send in forecast] == [
        ("g0", 9), ("g1", 9), ("k0", 9), ("k1", 9), ("g2", 10), ("g3", 10), ("g4", 11)]
    ticker = Ticker(campaigns, senders, list(queue))
    ticker.run(nine, MONDAY.replace(hour=23))
    assert ticker.simulated() == forecast
