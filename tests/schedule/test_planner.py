"""plan(): window, spacing, limits, priority, sender rotation and pinning, launch_at, downtime."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from engine.schedule import (
    Delay,
    SendRecord,
    Usage,
    effective_daily_limit,
    next_due_at,
    plan,
)
from tests.schedule.factories import by_id, campaign, item, items, sender, utc
from tests.schedule.ticking import Ticker

ALL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAY: dict[str, Any] = {"days": ALL_DAYS, "start_time": "00:00", "end_time": "24:00"}
MONDAY = utc(2026, 1, 5)


def test_nothing_goes_outside_the_window_and_next_due_is_the_opening() -> None:
    campaigns = by_id(campaign(timezone="Europe/Paris"))
    senders = by_id(sender("s1"))
    queue = items(3, MONDAY.replace(hour=6))
    early = plan(MONDAY.replace(hour=7), queue, campaigns, senders, Usage(), {})
    assert early.sends == ()
    assert early.next_due_at == MONDAY.replace(hour=8)  # 09:00 in Paris
    opened = plan(MONDAY.replace(hour=8), queue, campaigns, senders, Usage(), {})
    assert [(a.item.email_id, a.sender_id, a.at) for a in opened.sends] == [("e000", "s1", MONDAY.replace(hour=8))]


def test_each_pair_sends_once_per_call_then_waits_its_spacing() -> None:
    campaigns = by_id(campaign(every_minutes=10))
    senders = by_id(sender("s1"))
    queue = items(5, MONDAY)
    nine = MONDAY.replace(hour=9)
    first = plan(nine, queue, campaigns, senders, Usage(), {})
    assert len(first.sends) == 1
    assert first.next_due_at == nine + timedelta(minutes=10)
    rest = [i for i in queue if i.email_id != "e000"]
    assert plan(nine + timedelta(minutes=5), rest, campaigns, senders, first.usage, {}).sends == ()
    assert len(plan(nine + timedelta(minutes=10), rest, campaigns, senders, first.usage, {}).sends) == 1


def test_unpinned_items_rotate_over_the_campaigns_senders() -> None:
    campaigns = by_id(campaign(senders=("s1", "s2", "s3"), every_minutes=10))
    senders = by_id(sender("s1"), sender("s2"), sender("s3"))
    nine = MONDAY.replace(hour=9)
    p = plan(nine, items(5, MONDAY), campaigns, senders, Usage(), {})
    assert [(a.item.email_id, a.sender_id) for a in p.sends] == [("e000", "s1"), ("e001", "s2"), ("e002", "s3")]
    # After s1 sent last, the round starts at s2.
    usage = Usage.from_sends([SendRecord("c1", "s1", "w1", MONDAY.replace(hour=8))], campaigns)
    p = plan(nine, items(5, MONDAY), campaigns, senders, usage, {})
    assert [(a.item.email_id, a.sender_id) for a in p.sends] == [("e000", "s2"), ("e001", "s3"), ("e002", "s1")]


def test_follow_ups_only_go_through_their_own_sender() -> None:
    campaigns = by_id(campaign(senders=("s1", "s2"), every_minutes=10))
    queue = [item("f1", MONDAY, step=2, pinned="s2", priority=5), item("n1", MONDAY)]
    p = plan(MONDAY.replace(hour=9), queue, campaigns, by_id(sender("s1"), sender("s2")), Usage(), {})
    assert sorted((a.item.email_id, a.sender_id) for a in p.sends) == [("f1", "s2"), ("n1", "s1")]
    # With s2 inactive its follow-up waits (no wake-up for it either); s1 never takes it.
    senders = by_id(sender("s1"), sender("s2", active=False))
    p = plan(MONDAY.replace(hour=9), queue[:1], campaigns, senders, Usage(), {})
    assert p.sends == () and p.next_due_at is None
    # A sender removed from the campaign does not send its old threads either.
    removed = by_id(campaign(senders=("s1",), every_minutes=10))
    assert plan(MONDAY.replace(hour=9), queue[:1], removed, senders, Usage(), {}).sends == ()


def test_priority_then_due_date_then_seq() -> None:
    campaigns = by_id(campaign(every_minutes=1))
    queue = [
        item("a", MONDAY.replace(hour=1), seq=1),
        item("b", MONDAY.replace(hour=2), priority=3, seq=2),
        item("c", MONDAY.replace(hour=1), seq=0),
        item("d", MONDAY.replace(hour=9, minute=30), priority=9, seq=3),  # not due yet at 09:00
    ]
    ticker = Ticker(campaigns, by_id(sender("s1")), queue)
    ticker.run(MONDAY.replace(hour=9), MONDAY.replace(hour=10))
    assert [a.item.email_id for a in ticker.sent] == ["b", "c", "a", "d"]
    assert [a.at.minute for a in ticker.sent] == [0, 1, 2, 30]


def test_max_per_hour_counts_calendar_hours() -> None:
    campaigns = by_id(campaign(every_minutes=1, max_per_hour=2, **ALL_DAY))
    ticker = Ticker(campaigns, by_id(sender("s1")), items(20, MONDAY))
    ticker.run(MONDAY.replace(hour=8, minute=30), MONDAY.replace(hour=10, minute=59))
    assert [(a.at.hour, a.at.minute) for a in ticker.sent] == [(8, 30), (8, 31), (9, 0), (9, 1), (10, 0), (10, 1)]


def test_campaign_daily_limit_counts_days_in_the_campaign_timezone() -> None:
    campaigns = by_id(campaign(timezone="America/New_York", daily_limit=2, every_minutes=60, **ALL_DAY))
    ticker = Ticker(campaigns, by_id(sender("s1", limit=None)), items(20, MONDAY))
    ticker.run(MONDAY.replace(hour=12), MONDAY + timedelta(days=2, hours=7))
    # Monday 12:00 UTC is 07:00 in New York; New York's next day starts at 05:00 UTC.
    assert [a.at for a in ticker.sent] == [
        MONDAY.replace(hour=12),
        MONDAY.replace(hour=13),
        MONDAY + timedelta(days=1, hours=5),
        MONDAY + timedelta(days=1, hours=6),
        MONDAY + timedelta(days=2, hours=5),
        MONDAY + timedelta(days=2, hours=6),
    ]


def test_sender_daily_limit_is_shared_by_all_its_campaigns() -> None:
    campaigns = by_id(
        campaign("c1", every_minutes=1, **ALL_DAY),
        campaign("c2", every_minutes=1, **ALL_DAY),
    )
    queue = items(10, MONDAY, "c1", "a") + items(10, MONDAY, "c2", "b")
    ticker = Ticker(campaigns, by_id(sender("s1", limit=3)), queue)
    ticker.run(MONDAY.replace(hour=22), MONDAY + timedelta(days=1, hours=1))
    per_day = Counter(a.at.date() for a in ticker.sent)
    assert per_day == {MONDAY.date(): 3, (MONDAY + timedelta(days=1)).date(): 3}
    assert {a.item.campaign_id for a in ticker.sent} == {"c1", "c2"}
    assert ticker.sent[3].at == MONDAY + timedelta(days=1)  # the UTC day resets the limit


def test_daily_limit_variation_is_applied_per_utc_day() -> None:
    varied = sender("s1", limit=10, pct=50)
    campaigns = by_id(campaign(every_minutes=1, **ALL_DAY))
    ticker = Ticker(campaigns, by_id(varied), items(40, MONDAY))
    ticker.run(MONDAY, MONDAY + timedelta(days=3) - timedelta(seconds=1))
    per_day = Counter(a.at.date() for a in ticker.sent)
    for day, count in per_day.items():
        assert count == effective_daily_limit(varied, day)


def test_workspace_monthly_limit_waits_for_next_month() -> None:
    campaigns = by_id(campaign(every_minutes=1, **ALL_DAY))
    history = [SendRecord("other", "s9", "w1", utc(2026, 1, 3, 10, i)) for i in range(4)]
    usage = Usage.from_sends(history, campaigns)
    end_of_month = utc(2026, 1, 30, 12)
    p = plan(end_of_month, items(5, MONDAY), campaigns, by_id(sender("s1")), usage, {"w1": 5})
    assert len(p.sends) == 1
    assert p.next_due_at == utc(2026, 2, 1)
    other_ws = plan(end_of_month, items(5, MONDAY), campaigns, by_id(sender("s1")), usage, {"w2": 1})
    assert other_ws.next_due_at == end_of_month + timedelta(minutes=1)


def test_launch_at_is_respected() -> None:
    campaigns = by_id(campaign(launch_at=MONDAY.replace(hour=10, minute=30)))
    senders = by_id(sender("s1"))
    queue = items(2, MONDAY)
    p = plan(MONDAY.replace(hour=9), queue, campaigns, senders, Usage(), {})
    assert p.sends == () and p.next_due_at == MONDAY.replace(hour=10, minute=30)


def test_inactive_campaign_sends_nothing_and_an_empty_queue_never_wakes() -> None:
    senders = by_id(sender("s1"))
    paused = by_id(campaign(active=False))
    assert plan(MONDAY.replace(hour=9), items(2, MONDAY), paused, senders, Usage(), {}).next_due_at is None
    active = by_id(campaign())
    p = plan(MONDAY.replace(hour=9), [], active, senders, Usage(), {})
    assert p.sends == () and p.next_due_at is None


def test_contact_timezone_windows() -> None:
    campaigns = by_id(campaign(timezone="Europe/Paris", use_contact_timezone=True))
    senders = by_id(sender("s1"))
    new_york = [item("ny", MONDAY, tz="America/New_York")]
    paris = [item("pa", MONDAY)]
    assert next_due_at(MONDAY, new_york, campaigns, senders, Usage(), {}) == MONDAY.replace(hour=14)
    assert next_due_at(MONDAY, paris, campaigns, senders, Usage(), {}) == MONDAY.replace(hour=8)
    # At 16:30 UTC Paris is closed but New York is open: the New York contact goes first.
    p = plan(MONDAY.replace(hour=16, minute=30), paris + new_york, campaigns, senders, Usage(), {})
    assert [a.item.email_id for a in p.sends] == ["ny"]


def test_cron_pairs_send_at_fire_times() -> None:
    campaigns = by_id(campaign(cron="*/15 * * * *"))
    senders = by_id(sender("s1"))
    # Due before the window opens: the first send is at the first fire time inside it.
    assert next_due_at(MONDAY, items(1, MONDAY), campaigns, senders, Usage(), {}) == MONDAY.replace(hour=9)
    # Due at 09:03 on an idle pair: it waits for 09:15, and a call at 09:10 sends nothing.
    late = [item("x", MONDAY.replace(hour=9, minute=3))]
    at_903 = plan(MONDAY.replace(hour=9, minute=3), late, campaigns, senders, Usage(), {})
    assert at_903.sends == () and at_903.next_due_at == MONDAY.replace(hour=9, minute=15)
    assert plan(MONDAY.replace(hour=9, minute=10), late, campaigns, senders, Usage(), {}).sends == ()
    assert len(plan(MONDAY.replace(hour=9, minute=15), late, campaigns, senders, Usage(), {}).sends) == 1


def test_after_ten_hours_without_calls_one_send_per_pair_then_normal_spacing() -> None:
    campaigns = by_id(campaign(senders=("s1", "s2"), **ALL_DAY))  # waits 120-420 s
    ticker = Ticker(campaigns, by_id(sender("s1", limit=None), sender("s2", limit=None)), items(300, MONDAY))
    ticker.run(MONDAY.replace(hour=8), MONDAY.replace(hour=9))
    before = len(ticker.sent)
    assert ticker.next_due is not None and ticker.next_due < MONDAY.replace(hour=9, minute=10)
    back = MONDAY.replace(hour=19, minute=10)  # ten hours with no call at all
    p = ticker.tick(back)
    assert sorted(a.sender_id for a in p.sends) == ["s1", "s2"]
    assert all(a.at == back for a in p.sends)
    ticker.run(ticker.next_due or back, MONDAY.replace(hour=21))
    after = ticker.sent[before:]
    for sid in ("s1", "s2"):
        times = [a.at for a in after if a.sender_id == sid]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert times[0] == back and len(times) > 10
        assert all(120 <= gap <= 420 for gap in gaps)


def test_late_call_outside_the_window_sends_nothing_and_waits_for_the_opening() -> None:
    campaigns = by_id(campaign(every_minutes=5))
    senders = by_id(sender("s1"))
    evening = MONDAY.replace(hour=20)
    p = plan(evening, items(2, MONDAY), campaigns, senders, Usage(), {})
    assert p.sends == () and p.next_due_at == MONDAY.replace(day=6, hour=9)


def test_follow_up_due_dates_use_the_step_delay() -> None:
    delays = (Delay(), Delay(days=2, business_days=True), Delay(hours=3))
    campaigns = by_id(campaign(senders=("s1", "s2"), every_minutes=5, delays=delays))
    ticker = Ticker(campaigns, by_id(sender("s1"), sender("s2")), items(1, MONDAY))
    friday = utc(2026, 1, 9)
    ticker.run(friday.replace(hour=9), friday + timedelta(days=7))
    steps = [(a.item.step, a.sender_id, a.at) for a in ticker.sent]
    assert steps == [
        (1, "s1", friday.replace(hour=9)),
        (2, "s1", utc(2026, 1, 13, 9)),  # two business days after Friday: Tuesday
        (3, "s1", utc(2026, 1, 13, 12)),
    ]
