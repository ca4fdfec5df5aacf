"""The forecast: simulate() and the grouping of its sends by local day."""

from __future__ import annotations

from datetime import date, timedelta

from engine.schedule import (
    Delay,
    SimulatedSend,
    Usage,
    forecast_by_day,
    forecast_range,
    simulate,
)
from tests.schedule.factories import by_id, campaign, items, sender, utc
from tests.schedule.ticking import Ticker

MONDAY = utc(2026, 1, 5)


def send(at_hour: int, step: int = 1, sender_id: str = "s1", day: int = 5) -> SimulatedSend:
    return SimulatedSend("e", "n", "c1", step, sender_id, utc(2026, 1, day, at_hour))


def test_forecast_by_day_groups_by_local_day_and_keeps_empty_days() -> None:
    sends = [send(10), send(22, step=2), send(23, sender_id="s2"), send(9, day=7)]
    # In Paris (UTC+1) 23:00 UTC on the 5th is already the 6th.
    days = forecast_by_day(sends, "Europe/Paris", date(2026, 1, 5), 4)
    assert days == [
        {"date": "2026-01-05", "count": 2, "by_step": {"1": 1, "2": 1}, "by_sender": {"s1": 2}},
        {"date": "2026-01-06", "count": 1, "by_step": {"1": 1}, "by_sender": {"s2": 1}},
        {"date": "2026-01-07", "count": 1, "by_step": {"1": 1}, "by_sender": {"s1": 1}},
        {"date": "2026-01-08", "count": 0, "by_step": {}, "by_sender": {}},
    ]
    assert forecast_by_day(sends, "UTC", date(2026, 1, 6), 1)[0]["count"] == 0


def test_forecast_range_covers_whole_local_days() -> None:
    start, until = forecast_range(utc(2026, 1, 5, 23, 30), "Europe/Paris", 7)
    assert start == date(2026, 1, 6)
    assert until == utc(2026, 1, 12, 23) - timedelta(microseconds=1)


def test_simulate_runs_all_steps_and_matches_the_tick_loop() -> None:
    delays = (Delay(), Delay(days=1), Delay(days=2, business_days=True))
    campaigns = by_id(campaign(timezone="Europe/Paris", senders=("s1", "s2"), delays=delays))
    senders = by_id(sender("s1", limit=20, pct=25), sender("s2", limit=20))
    queue = items(60, MONDAY)
    until = MONDAY + timedelta(days=14)
    forecast = simulate(MONDAY, until, queue, campaigns, senders, Usage(), {"w1": 150})
    ticker = Ticker(campaigns, senders, list(queue), monthly_limits={"w1": 150})
    ticker.run(MONDAY, until)
    assert ticker.simulated() == forecast
    assert len(forecast) == 150  # the monthly limit
    by_enrollment: dict[str, list[SimulatedSend]] = {}
    for s in forecast:
        by_enrollment.setdefault(s.enrollment_id, []).append(s)
    for sends in by_enrollment.values():
        assert [s.step for s in sends] == list(range(1, len(sends) + 1))
        assert len({s.sender_id for s in sends}) == 1


def test_simulate_stops_at_until_and_starts_from_the_given_usage() -> None:
    campaigns = by_id(campaign(every_minutes=30))
    senders = by_id(sender("s1"))
    first = simulate(MONDAY, MONDAY.replace(hour=10), items(10, MONDAY), campaigns, senders, Usage(), {})
    assert [s.at for s in first] == [MONDAY.replace(hour=9), MONDAY.replace(hour=9, minute=30), MONDAY.replace(hour=10)]
    usage = Usage().record(campaign_id="c1", sender_id="s1", workspace_id="w1", at=MONDAY.replace(hour=9, minute=50))
    later = simulate(MONDAY, MONDAY.replace(hour=11), items(10, MONDAY), campaigns, senders, usage, {})
    assert [s.at for s in later] == [MONDAY.replace(hour=10, minute=20), MONDAY.replace(hour=10, minute=50)]
