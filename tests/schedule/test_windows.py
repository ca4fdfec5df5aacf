"""Send windows and delays: weekdays, 24:00, contact time zones and both DST changes."""

from __future__ import annotations

from datetime import timedelta

from engine.schedule import (
    Delay,
    ScheduleSpec,
    add_delay,
    in_window,
    next_window_open,
    window_close,
    window_for,
)
from tests.schedule.factories import utc

ALL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PARIS = ScheduleSpec(timezone="Europe/Paris")  # mon-fri 09:00-17:00


def test_weekday_window_in_campaign_timezone() -> None:
    monday = utc(2026, 1, 5)  # a Monday; Paris is UTC+1 in winter
    assert not in_window(PARIS, monday.replace(hour=7, minute=59))
    assert in_window(PARIS, monday.replace(hour=8))
    assert in_window(PARIS, monday.replace(hour=15, minute=59, second=59))
    assert not in_window(PARIS, monday.replace(hour=16))  # 17:00 local: end is exclusive
    assert not in_window(PARIS, utc(2026, 1, 10, 10))  # Saturday


def test_next_open_is_at_itself_inside_and_skips_the_weekend() -> None:
    inside = utc(2026, 1, 5, 10)
    assert next_window_open(PARIS, inside) == inside
    friday_evening = utc(2026, 1, 9, 18)
    assert next_window_open(PARIS, friday_evening) == utc(2026, 1, 12, 8)
    assert window_close(PARIS, inside) == utc(2026, 1, 5, 16)
    assert window_close(PARIS, friday_evening) == utc(2026, 1, 12, 16)


def test_window_ending_at_midnight() -> None:
    spec = ScheduleSpec(timezone="Europe/Paris", days=("mon",), start_time="20:00", end_time="24:00")
    assert in_window(spec, utc(2026, 1, 5, 22, 59, 59))  # 23:59:59 Monday in Paris
    assert not in_window(spec, utc(2026, 1, 5, 23))  # 00:00 Tuesday
    assert window_close(spec, utc(2026, 1, 5, 20)) == utc(2026, 1, 5, 23)
    assert next_window_open(spec, utc(2026, 1, 5, 23)) == utc(2026, 1, 12, 19)


def test_all_day_windows_follow_each_other_at_midnight() -> None:
    spec = ScheduleSpec(timezone="America/New_York", days=ALL_DAYS, start_time="00:00", end_time="24:00")
    at = utc(2026, 1, 5, 12)
    close = window_close(spec, at)
    assert close == utc(2026, 1, 6, 5)  # midnight in New York
    assert in_window(spec, close)
    assert next_window_open(spec, close) == close


def test_new_york_window_moves_in_utc_across_spring_forward() -> None:
    spec = ScheduleSpec(timezone="America/New_York", days=ALL_DAYS)
    # Saturday 2026-03-07 is EST (UTC-5); Monday 2026-03-09 is EDT (UTC-4).
    assert next_window_open(spec, utc(2026, 3, 7, 0)) == utc(2026, 3, 7, 14)
    assert next_window_open(spec, utc(2026, 3, 9, 0)) == utc(2026, 3, 9, 13)
    assert window_close(spec, utc(2026, 3, 9, 13)) == utc(2026, 3, 9, 21)


def test_whole_day_window_lasts_23_and_25_hours_on_dst_days() -> None:
    spec = ScheduleSpec(timezone="America/New_York", days=("sun",), start_time="00:00", end_time="24:00")
    spring = window_for(spec).bounds(utc(2026, 3, 8).date())
    autumn = window_for(spec).bounds(utc(2026, 11, 1).date())
    assert spring is not None and autumn is not None
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)


def test_window_opening_at_a_missing_time_opens_at_the_jump() -> None:
    # Paris 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    spec = ScheduleSpec(timezone="Europe/Paris", days=ALL_DAYS, start_time="02:30", end_time="04:00")
    assert next_window_open(spec, utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 1)
    assert not in_window(spec, utc(2026, 3, 29, 0, 59, 59))
    assert in_window(spec, utc(2026, 3, 29, 1))
    assert window_close(spec, utc(2026, 3, 29, 1)) == utc(2026, 3, 29, 2)


def test_window_entirely_inside_the_gap_is_empty_that_day() -> None:
    spec = ScheduleSpec(timezone="Europe/Paris", days=ALL_DAYS, start_time="02:00", end_time="03:00")
    assert window_for(spec).bounds(utc(2026, 3, 29).date()) is None
    # Next day 02:00 CEST = 00:00 UTC.
    assert next_window_open(spec, utc(2026, 3, 28, 23)) == utc(2026, 3, 30, 0)


def test_window_ending_in_the_repeated_hour_does_not_reopen() -> None:
    # Paris 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:00-03:00 happens twice.
    spec = ScheduleSpec(timezone="Europe/Paris", days=ALL_DAYS, start_time="01:00", end_time="02:30")
    assert next_window_open(spec, utc(2026, 10, 24, 22)) == utc(2026, 10, 24, 23)  # 01:00 CEST
    assert window_close(spec, utc(2026, 10, 24, 23)) == utc(2026, 10, 25, 0, 30)  # first 02:30
    assert in_window(spec, utc(2026, 10, 25, 0, 15))  # first 02:15 (CEST)
    assert not in_window(spec, utc(2026, 10, 25, 1, 15))  # second 02:15 (CET)
    assert next_window_open(spec, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 0)


def test_window_starting_in_the_repeated_hour_starts_at_its_first_pass() -> None:
    spec = ScheduleSpec(timezone="Europe/Paris", days=("sun",), start_time="02:30", end_time="05:00")
    bounds = window_for(spec).bounds(utc(2026, 10, 25).date())
    assert bounds == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 4))


def test_contact_timezone_is_used_only_when_asked_and_known() -> None:
    campaign_tz = ScheduleSpec(timezone="Europe/Paris")
    contact_tz = ScheduleSpec(timezone="Europe/Paris", use_contact_timezone=True)
    at = utc(2026, 1, 5, 17)  # 18:00 in Paris, 12:00 in New York
    assert not in_window(campaign_tz, at, "America/New_York")
    assert in_window(contact_tz, at, "America/New_York")
    assert not in_window(contact_tz, at, None)
    assert not in_window(contact_tz, at, "Not/AZone")  # unknown zone: the campaign's
    assert next_window_open(contact_tz, utc(2026, 1, 5, 20), "Asia/Tokyo") == utc(2026, 1, 6, 0)


def test_add_delay_business_days_skip_the_weekend() -> None:
    friday = utc(2026, 1, 9, 9)  # 10:00 in Paris
    saturday = utc(2026, 1, 10, 9)
    two = Delay(days=1, business_days=True)
    assert add_delay(friday, two, "Europe/Paris") == utc(2026, 1, 12, 9)
    assert add_delay(saturday, two, "Europe/Paris") == utc(2026, 1, 12, 9)
    assert add_delay(utc(2026, 1, 8, 9), Delay(days=3, business_days=True), "Europe/Paris") == utc(2026, 1, 13, 9)
    assert add_delay(friday, Delay(days=1), "Europe/Paris") == utc(2026, 1, 10, 9)


def test_add_delay_business_days_are_counted_in_the_given_zone() -> None:
    # Friday 23:30 UTC is already Saturday 08:30 in Tokyo: the next business day is Monday there.
    late_friday = utc(2026, 1, 9, 23, 30)
    assert add_delay(late_friday, Delay(days=1, business_days=True), "UTC") == utc(2026, 1, 12, 23, 30)
    assert add_delay(late_friday, Delay(days=1, business_days=True), "Asia/Tokyo") == utc(2026, 1, 11, 23, 30)


def test_add_delay_days_keep_the_local_time_across_dst_and_hours_are_elapsed() -> None:
    saturday = utc(2026, 3, 28, 9)  # 10:00 CET
    assert add_delay(saturday, Delay(days=1), "Europe/Paris") == utc(2026, 3, 29, 8)  # 10:00 CEST
    assert add_delay(saturday, Delay(hours=24), "Europe/Paris") == utc(2026, 3, 29, 9)
    assert add_delay(saturday, Delay(days=1, hours=2, minutes=30), "Europe/Paris") == utc(2026, 3, 29, 10, 30)
    assert add_delay(saturday, Delay(), "Europe/Paris") == saturday


def test_add_delay_landing_on_a_missing_time_moves_to_the_jump() -> None:
    sent = utc(2026, 3, 28, 1, 30)  # 02:30 CET on Saturday; Sunday 02:30 does not exist
    assert add_delay(sent, Delay(days=1), "Europe/Paris") == utc(2026, 3, 29, 1)
