"""Cron fire times, spacing after a send, seeded waits and seeded daily-limit variation."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

from engine.schedule import (
    LastSend,
    ScheduleSpec,
    effective_daily_limit,
    next_allowed_at,
    next_fire_after,
    next_fire_at_or_after,
    seeded_wait_seconds,
    stable_seed,
)
from tests.schedule.factories import sender, utc


def fires(expr: str, tz: str, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    at = start
    for _ in range(count):
        found = next_fire_after(expr, tz, at)
        assert found is not None
        out.append(found)
        at = found
    return out


def test_weekday_numbers_mean_what_they_mean_in_crontab() -> None:
    sunday = utc(2026, 1, 4, 12)
    assert next_fire_after("0 9 * * 1-5", "Europe/Paris", sunday) == utc(2026, 1, 5, 8)  # Monday
    assert next_fire_after("0 9 * * 0", "UTC", utc(2026, 1, 5)) == utc(2026, 1, 11, 9)  # Sunday
    assert next_fire_after("0 9 * * 7", "UTC", utc(2026, 1, 5)) == utc(2026, 1, 11, 9)
    assert next_fire_after("0 9 * * sat", "UTC", utc(2026, 1, 5)) == utc(2026, 1, 10, 9)
    assert next_fire_after("0 9 * * */2", "UTC", utc(2026, 1, 4, 10)) == utc(2026, 1, 6, 9)  # sun,tue,thu,sat


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Standard crontab: the 1st of the month OR a Monday.
    got = fires("0 9 1 * mon", "UTC", utc(2026, 1, 27), 3)
    assert got == [utc(2026, 2, 1, 9), utc(2026, 2, 2, 9), utc(2026, 2, 9, 9)]


def test_fire_time_lookup_is_inclusive_and_the_next_one_strict() -> None:
    at = utc(2026, 1, 5, 9, 15)
    assert next_fire_at_or_after("*/15 * * * *", "UTC", at) == at
    assert next_fire_after("*/15 * * * *", "UTC", at) == utc(2026, 1, 5, 9, 30)
    assert next_fire_after("*/15 * * * *", "UTC", at + timedelta(microseconds=5)) == utc(2026, 1, 5, 9, 30)


def test_daily_cron_fires_once_a_day_across_both_dst_changes() -> None:
    spring = fires("30 2 * * *", "Europe/Paris", utc(2026, 3, 27, 12), 4)
    # 02:30 does not exist on 2026-03-29: it fires at the jump, 03:00 CEST.
    assert spring == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    autumn = fires("30 2 * * *", "Europe/Paris", utc(2026, 10, 23, 12), 4)
    # 02:30 happens twice on 2026-10-25: it fires once, at the first pass.
    assert autumn == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
        utc(2026, 10, 27, 1, 30),
    ]


def test_frequent_cron_never_goes_back_in_time_through_the_repeated_hour() -> None:
    got = fires("*/20 * * * *", "Europe/Paris", utc(2026, 10, 24, 23, 50), 8)
    assert all(b > a for a, b in zip(got, got[1:], strict=False))
    # 02:00-03:00 CEST = 00:00-01:00 UTC fires; the second 02:00-03:00 (CET) does not.
    assert got == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 0, 20),
        utc(2026, 10, 25, 0, 40),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 2, 20),
        utc(2026, 10, 25, 2, 40),
        utc(2026, 10, 25, 3),
        utc(2026, 10, 25, 3, 20),
    ]
    # Starting inside the second pass does not fire the first pass's times again.
    assert next_fire_at_or_after("*/20 * * * *", "Europe/Paris", utc(2026, 10, 25, 1, 5)) == utc(2026, 10, 25, 2)


def test_new_york_cron_across_spring_forward() -> None:
    got = fires("0 * * * *", "America/New_York", utc(2026, 3, 8, 5, 30), 3)
    # 01:00 EST = 06:00 UTC, then 02:00 does not exist: 03:00 EDT = 07:00 UTC.
    assert got == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_next_allowed_cron_wins_then_every_minutes_then_wait() -> None:
    last = LastSend(at=utc(2026, 1, 5, 9, 3), local_date=date(2026, 1, 5), seq=1)
    cron = ScheduleSpec(cron="*/10 * * * *", every_minutes=5)
    every = ScheduleSpec(every_minutes=5)
    wait = ScheduleSpec(min_wait_seconds=100, max_wait_seconds=100)
    assert next_allowed_at(cron, "c", "s", last) == utc(2026, 1, 5, 9, 10)
    assert next_allowed_at(every, "c", "s", last) == utc(2026, 1, 5, 9, 8)
    assert next_allowed_at(wait, "c", "s", last) == last.at + timedelta(seconds=100)


def test_seeded_waits_are_reproducible_bounded_and_varied() -> None:
    day = date(2026, 1, 5)
    waits = [seeded_wait_seconds("c1", "s1", day, n, 120, 420) for n in range(1, 301)]
    again = [seeded_wait_seconds("c1", "s1", day, n, 120, 420) for n in range(1, 301)]
    assert waits == again
    assert all(120 <= w <= 420 for w in waits)
    assert min(waits) < 150 and max(waits) > 390 and len(set(waits)) > 100
    other_sender = [seeded_wait_seconds("c1", "s2", day, n, 120, 420) for n in range(1, 301)]
    assert other_sender != waits
    assert seeded_wait_seconds("c1", "s1", day, 1, 60, 60) == 60


def test_seed_is_a_sha256_of_the_parts_not_pythons_hash() -> None:
    expected = int.from_bytes(hashlib.sha256(b"c1\x1fs1\x1f2026-01-05\x1f3").digest()[:8], "big")
    assert stable_seed("c1", "s1", "2026-01-05", 3) == expected


def test_daily_limit_variation_never_exceeds_the_limit_and_is_fixed_per_day() -> None:
    varied = sender("s1", limit=50, pct=30)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    limits = [effective_daily_limit(varied, d) for d in days]
    assert limits == [effective_daily_limit(varied, d) for d in days]
    assert all(lim is not None and 35 <= lim <= 50 for lim in limits)
    assert len(set(limits)) > 5
    assert effective_daily_limit(sender("s1", limit=50, pct=0), days[0]) == 50
    assert effective_daily_limit(sender("s1", limit=None, pct=30), days[0]) is None
    assert {effective_daily_limit(sender("s1", limit=2, pct=100), d) for d in days} == {0, 1, 2}
    assert effective_daily_limit(sender("s1", limit=3, pct=10), days[0]) == 3  # cut < 1 email
