"""Skip dates and holiday calendars: closed days for windows, slots, business-day delays and the forecast."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays as holiday_calendars
import pytest

from engine.schedule import (
    Delay,
    InvalidSchedule,
    ScheduleSpec,
    Usage,
    add_delay,
    follow_up,
    forecast_by_day,
    in_window,
    next_window_open,
    plan,
    simulate,
    validate_schedule,
    window_close,
)
from engine.schedule.closed_days import holiday_dates
from engine.schedule.planner import Assignment
from tests.schedule.factories import by_id, campaign, item, items, sender, utc
from tests.schedule.ticking import Ticker

PARIS = ZoneInfo("Europe/Paris")
# Mon-Fri 09:00-17:00 in Paris, French public holidays, and one company day off.
FRENCH = {"timezone": "Europe/Paris", "holidays": "FR", "skip_dates": ("2026-12-28",)}
CHRISTMAS_EVE_EVENING = utc(2026, 12, 24, 16)  # 17:00 in Paris, Thursday: the window just closed


def french(**extra: Any) -> ScheduleSpec:
    return ScheduleSpec.from_dict({**FRENCH, **extra})


# --- validation -------------------------------------------------------------------------------


def test_unknown_country_or_subdivision_is_a_problem_naming_the_field() -> None:
    assert [f for f, _ in validate_schedule({"holidays": "XX"})] == ["holidays"]
    assert [f for f, _ in validate_schedule({"holidays": "US-ZZ"})] == ["holidays"]
    assert [f for f, _ in validate_schedule({"holidays": 42})] == ["holidays"]
    problems = validate_schedule({"skip_dates": ["2026-12-25", "2026-13-01", "25/12/2026", 20261225]})
    assert [f for f, _ in problems] == ["skip_dates"] * 3
    assert [f for f, _ in validate_schedule({"skip_dates": "2026-12-25"})] == ["skip_dates"]
    with pytest.raises(InvalidSchedule):
        ScheduleSpec(holidays="Narnia")


def test_spec_normalises_and_round_trips_the_new_fields() -> None:
    spec = ScheduleSpec.from_dict({"holidays": "us-ca", "skip_dates": ["2026-12-31", "2026-12-24", "2026-12-31"]})
    assert spec.holidays == "US-CA"
    assert spec.skip_dates == (date(2026, 12, 24), date(2026, 12, 31))
    assert spec.to_dict()["skip_dates"] == ["2026-12-24", "2026-12-31"]
    assert ScheduleSpec.from_dict(spec.to_dict()) == spec
    assert ScheduleSpec().closed_days is None  # no calendar, no skip date: windows as before
    defaults = ScheduleSpec().to_dict()
    assert defaults["skip_dates"] == [] and defaults["holidays"] is None


# --- windows ----------------------------------------------------------------------------------


def test_holidays_and_skip_dates_close_the_whole_day() -> None:
    spec = french()
    assert not in_window(spec, utc(2026, 12, 25, 10))  # Christmas, a Friday
    assert not in_window(spec, utc(2026, 12, 28, 10))  # the skip date, a Monday
    assert in_window(spec, utc(2026, 12, 29, 10))
    assert not in_window(spec, utc(2026, 7, 14, 10))  # Bastille Day, a Tuesday
    assert in_window(ScheduleSpec(timezone="Europe/Paris"), utc(2026, 7, 14, 10))


def test_next_open_jumps_past_closed_days() -> None:
    spec = french()
    # Thursday evening: Friday is Christmas, then the weekend, then the skip date.
    assert next_window_open(spec, CHRISTMAS_EVE_EVENING) == utc(2026, 12, 29, 8)
    assert window_close(spec, CHRISTMAS_EVE_EVENING) == utc(2026, 12, 29, 16)
    # Monday evening before Bastille Day (CEST: 09:00 is 07:00 UTC) opens again on Wednesday.
    assert next_window_open(spec, utc(2026, 7, 13, 16)) == utc(2026, 7, 15, 7)


def test_subdivision_calendars_differ_from_the_country() -> None:
    cesar_chavez_day = utc(2026, 3, 31, 18)  # Tuesday, 11:00 in Los Angeles; a California holiday
    base = {"timezone": "America/Los_Angeles"}
    assert in_window(ScheduleSpec.from_dict({**base, "holidays": "US"}), cesar_chavez_day)
    assert not in_window(ScheduleSpec.from_dict({**base, "holidays": "US-CA"}), cesar_chavez_day)


def test_many_consecutive_skip_dates_are_walked_over() -> None:
    """Longer than the plain search of a fortnight: the window must still find its next day."""
    skip = [(date(2026, 8, 1) + timedelta(days=n)).isoformat() for n in range(31)]
    spec = ScheduleSpec.from_dict({"days": ["mon"], "skip_dates": skip})
    assert next_window_open(spec, utc(2026, 7, 28)) == utc(2026, 9, 7, 9)


def test_a_contact_timezone_campaign_closes_the_contacts_own_calendar_day() -> None:
    spec = ScheduleSpec.from_dict({
        "timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start_time": "00:00", "end_time": "24:00", "use_contact_timezone": True, "skip_dates": ["2026-12-25"],
    })
    at = utc(2026, 12, 24, 16)  # still the 24th in UTC, already the 25th (01:00) in Tokyo
    assert in_window(spec, at)
    assert not in_window(spec, at, "Asia/Tokyo")
    assert next_window_open(spec, at, "Asia/Tokyo") == utc(2026, 12, 25, 15)  # 26th, 00:00 in Tokyo
    assert not in_window(spec, utc(2026, 12, 25, 10))
    assert in_window(spec, utc(2026, 12, 25, 10), "America/Los_Angeles") is False  # 02:00 on the 25th there
    assert in_window(spec, utc(2026, 12, 25, 7), "America/Los_Angeles")  # 23:00 on the 24th there


def test_holiday_sets_are_computed_once_per_country_and_year(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str | None, Any]] = []
    real = holiday_calendars.country_holidays

    def counting(country: str, subdiv: str | None = None, years: Any = None, **kw: Any) -> Any:
        calls.append((country, subdiv, years))
        return real(country, subdiv=subdiv, years=years, **kw)

    monkeypatch.setattr(holiday_calendars, "country_holidays", counting)
    holiday_dates.cache_clear()
    spec = ScheduleSpec.from_dict({"timezone": "Europe/Berlin", "holidays": "DE-BY"})
    for hour in range(0, 24 * 60, 5):
        in_window(spec, utc(2026, 12, 1) + timedelta(hours=hour))
    assert sorted(calls) == [("DE", "BY", 2026), ("DE", "BY", 2027)]


# --- business-day delays ----------------------------------------------------------------------


def test_business_day_delays_skip_holidays_and_skip_dates() -> None:
    spec = french()
    thursday = utc(2026, 12, 24, 10)
    one = Delay(days=1, business_days=True)
    assert add_delay(thursday, one, "Europe/Paris") == utc(2026, 12, 25, 10)  # weekends only
    # Friday is Christmas, then the weekend, then the skip date on Monday: Tuesday.
    assert add_delay(thursday, one, "Europe/Paris", spec.closed_days) == utc(2026, 12, 29, 10)
    two = Delay(days=2, business_days=True)
    assert add_delay(utc(2026, 7, 13, 10), two, "Europe/Paris", spec.closed_days) == utc(2026, 7, 16, 10)
    # Calendar-day delays are plain wall-clock days; only the window keeps them off closed days.
    assert add_delay(thursday, Delay(days=1), "Europe/Paris", spec.closed_days) == utc(2026, 12, 25, 10)


def test_follow_up_uses_the_campaigns_closed_days() -> None:
    plan_ = campaign(delays=(Delay(), Delay(days=1, business_days=True)), **FRENCH)
    sent = Assignment(item=item("e1", utc(2026, 12, 24, 9)), sender_id="s1", at=utc(2026, 12, 24, 10))
    nxt = follow_up(sent, plan_, "e1.2")
    assert nxt is not None and nxt.due_at == utc(2026, 12, 29, 10)


# --- planning and forecast --------------------------------------------------------------------


def test_nothing_is_planned_on_closed_days_and_next_due_at_jumps_past_them() -> None:
    campaigns = by_id(campaign(every_minutes=30, **FRENCH))
    senders = by_id(sender(limit=None))
    queue = items(40, utc(2026, 12, 24, 8))
    at_close = plan(CHRISTMAS_EVE_EVENING, queue, campaigns, senders, Usage(), {})
    assert at_close.sends == ()
    assert at_close.next_due_at == utc(2026, 12, 29, 8)
    on_christmas = plan(utc(2026, 12, 25, 10), queue, campaigns, senders, Usage(), {})
    assert on_christmas.sends == () and on_christmas.next_due_at == utc(2026, 12, 29, 8)


def test_forecast_shows_closed_days_empty_and_matches_the_tick_loop() -> None:
    delays = (Delay(), Delay(days=1, business_days=True))
    campaigns = by_id(campaign(every_minutes=60, delays=delays, **FRENCH))
    senders = by_id(sender(limit=None))
    queue = items(30, utc(2026, 12, 21, 8))
    start, until = utc(2026, 12, 21, 7), utc(2027, 1, 8)
    forecast = simulate(start, until, queue, campaigns, senders, Usage(), {})
    ticker = Ticker(campaigns, senders, list(queue))
    ticker.run(start, until)
    assert ticker.simulated() == forecast
    days = {d["date"]: d["count"] for d in forecast_by_day(forecast, "Europe/Paris", date(2026, 12, 21), 18)}
    for closed in ("2026-12-25", "2026-12-28", "2027-01-01"):
        assert days[closed] == 0
    assert days["2026-12-24"] == 8 and days["2026-12-29"] == 8
    assert len(forecast) == 60
    assert all(send.at.astimezone(PARIS).date() not in {date(2026, 12, 25), date(2026, 12, 28)} for send in forecast)
