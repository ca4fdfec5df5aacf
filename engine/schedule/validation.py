"""Validation of a campaign's schedule JSON: every problem, as (field, message), and never a raise.

The API turns the list into ``422 validation_failed`` (``{field, message}`` each) and the launch
check into ``campaign_invalid``, so it must report all problems at once and accept anything a
client may send, including wrong types. Field names are the schedule's own keys (``"days"``,
``"end_time"``...); the caller may prefix them with ``schedule.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from engine.schedule.closed_days import parse_holidays, parse_skip_date
from engine.schedule.cron import next_fire_at_or_after, parse_cron
from engine.schedule.tzutil import is_timezone
from engine.schedule.windows import Window

__all__ = ["SCHEDULE_DEFAULTS", "WEEKDAYS", "parse_hhmm", "parse_launch_at", "validate_schedule"]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

SCHEDULE_DEFAULTS: Mapping[str, object] = {
    "timezone": "UTC",
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "start_time": "09:00",
    "end_time": "17:00",
    "every_minutes": None,
    "cron": None,
    "min_wait_seconds": 120,
    "max_wait_seconds": 420,
    "max_per_hour": None,
    "daily_limit": None,
    "max_per_domain_per_hour": None,
    "max_per_domain_per_day": None,
    "launch_at": None,
    "use_contact_timezone": False,
    "skip_dates": [],
    "holidays": None,
}

MAX_WAIT_SECONDS = 86_400
# Enough for years of blackout days, small enough that a schedule stays a small document.
MAX_SKIP_DATES = 1000
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
# Fixed reference for "does this cron ever fire (inside the window)?": validation has no clock.
_REFERENCE = datetime(2025, 1, 6, tzinfo=UTC)
_CRON_PROBES = 800


def parse_hhmm(value: object, *, allow_24: bool) -> int | None:
    """Minutes after midnight for "HH:MM" (00:00-23:59, and 24:00 when allowed), else None."""
    if not isinstance(value, str):
        return None
    match = _HHMM.match(value)
    if match is None:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and minutes == 0 and allow_24:
        return 1440
    if hours > 23 or minutes > 59:
        return None
    return hours * 60 + minutes


def parse_launch_at(value: object) -> datetime | None:
    """A timezone-aware UTC datetime from a datetime or an ISO 8601 string; ValueError otherwise."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)  # ValueError on bad text; accepts a trailing Z
    else:
        raise ValueError("must be an ISO 8601 date-time")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a UTC offset, e.g. 2026-01-05T08:00:00Z")
    return parsed.astimezone(UTC)


def _int_in(value: object, low: int, high: int | None = None) -> bool:
    """True for a real int (not a bool) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return low <= value and (high is None or value <= high)


def _cron_fires_in_window(expr: str, window: Window) -> bool:
    at = _REFERENCE
    for _ in range(_CRON_PROBES):
        opens = window.next_open(at)
        fire = next_fire_at_or_after(expr, window.timezone, opens)
        if fire is None:
            return False
        if window.contains(fire):
            return True
        at = fire + timedelta(seconds=1)
    return False


def validate_schedule(d: object) -> list[tuple[str, str]]:
    """Every problem of schedule JSON `d` as (field, message); empty when `d` is valid.

    Omitted fields take the contract's defaults (and are then valid); unknown fields are problems.
    """
    if not isinstance(d, Mapping):
        return [("schedule", "must be an object")]
    problems: list[tuple[str, str]] = []
    problems += [(str(k), "unknown field") for k in sorted(map(str, d)) if k not in SCHEDULE_DEFAULTS]
    values = {**SCHEDULE_DEFAULTS, **{k: v for k, v in d.items() if k in SCHEDULE_DEFAULTS}}

    tz = values["timezone"]
    tz_ok = is_timezone(tz)
    if not tz_ok:
        problems.append(("timezone", "must be an IANA time zone name such as Europe/Paris"))

    days = values["days"]
    weekdays: set[int] = set()
    if not isinstance(days, list | tuple):
        problems.append(("days", "must be a list of mon, tue, wed, thu, fri, sat, sun"))
    elif not days:
        problems.append(("days", "must contain at least one day"))
    else:
        for day in days:
            if isinstance(day, str) and day.lower() in WEEKDAYS:
                weekdays.add(WEEKDAYS.index(day.lower()))
            else:
                problems.append(("days", f"unknown day {day!r}; use mon, tue, wed, thu, fri, sat, sun"))

    start = parse_hhmm(values["start_time"], allow_24=False)
    end = parse_hhmm(values["end_time"], allow_24=True)
    if start is None:
        problems.append(("start_time", "must be HH:MM between 00:00 and 23:59"))
    if end is None:
        problems.append(("end_time", "must be HH:MM between 00:00 and 24:00"))
    if start is not None and end is not None and end <= start:
        problems.append(("end_time", "must be later than start_time"))

    every = values["every_minutes"]
    if every is not None and not _int_in(every, 1, 1440):
        problems.append(("every_minutes", "must be null or an integer from 1 to 1440"))

    cron = values["cron"]
    if cron is not None:
        if not isinstance(cron, str):
            problems.append(("cron", "must be null or a 5-field crontab expression"))
        else:
            try:
                parse_cron(cron)
            except ValueError as exc:
                problems.append(("cron", f"invalid crontab expression: {exc}"))
            else:
                if next_fire_at_or_after(cron, "UTC", _REFERENCE) is None:
                    problems.append(("cron", "never fires"))
                elif tz_ok and weekdays and start is not None and end is not None and end > start:
                    window = Window(str(tz), frozenset(weekdays), start, end)
                    if not _cron_fires_in_window(cron, window):
                        problems.append(("cron", "never fires inside the send window"))

    low, high = values["min_wait_seconds"], values["max_wait_seconds"]
    for name, value in (("min_wait_seconds", low), ("max_wait_seconds", high)):
        if not _int_in(value, 0, MAX_WAIT_SECONDS):
            problems.append((name, f"must be an integer from 0 to {MAX_WAIT_SECONDS}"))
    if (
        isinstance(low, int)
        and isinstance(high, int)
        and _int_in(low, 0, MAX_WAIT_SECONDS)
        and _int_in(high, 0, MAX_WAIT_SECONDS)
        and low > high
    ):
        problems.append(("max_wait_seconds", "must be at least min_wait_seconds"))

    for name in ("max_per_hour", "daily_limit", "max_per_domain_per_hour", "max_per_domain_per_day"):
        value = values[name]
        if value is not None and not _int_in(value, 1):
            problems.append((name, "must be null or a positive integer"))

    if values["launch_at"] is not None:
        try:
            parse_launch_at(values["launch_at"])
        except ValueError as exc:
            problems.append(("launch_at", str(exc)))

    if not isinstance(values["use_contact_timezone"], bool):
        problems.append(("use_contact_timezone", "must be true or false"))

    skip_dates = values["skip_dates"]
    if not isinstance(skip_dates, list | tuple):
        problems.append(("skip_dates", "must be a list of dates written YYYY-MM-DD"))
    elif len(skip_dates) > MAX_SKIP_DATES:
        problems.append(("skip_dates", f"must hold at most {MAX_SKIP_DATES} dates"))
    else:
        for value in skip_dates:
            try:
                parse_skip_date(value)
            except ValueError as exc:
                problems.append(("skip_dates", str(exc)))

    calendar = values["holidays"]
    if calendar is not None:
        if not isinstance(calendar, str):
            problems.append(("holidays", "must be null or a country code such as FR or US-CA"))
        else:
            try:
                parse_holidays(calendar)
            except ValueError as exc:
                problems.append(("holidays", str(exc)))
    return problems
