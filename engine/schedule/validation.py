"""Validation of a campaign's schedule JSON: every problem, as (field, message), and never a raise.

The API turns the list into ``422 validation_failed`` (``{field, message}`` each) and the launch
check into ``campaign_invalid``, so it must report all problems at once and accept anything a
client may send, including wrong types. Field names are the schedule's own keys (``"days"``,
``"end_time"``...); the caller may prefix them with ``schedule.``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from engine.schedule.closed_days import format_holidays, parse_holidays, parse_skip_date
from engine.schedule.cron import next_fire_at_or_after, parse_cron
from engine.schedule.tzutil import is_timezone
from engine.schedule.windows import Window

__all__ = [
    "MAX_EVERY_MINUTES",
    "MAX_SKIP_DATES",
    "MAX_WAIT_SECONDS",
    "SCHEDULE_DEFAULTS",
    "WEEKDAYS",
    "cron_problems",
    "days_problems",
    "end_time_problems",
    "every_minutes_problems",
    "flag_problems",
    "holidays_problems",
    "launch_at_problems",
    "limit_problems",
    "normalised_days",
    "normalised_holidays",
    "normalised_skip_dates",
    "parse_hhmm",
    "parse_launch_at",
    "send_window",
    "skip_dates_problems",
    "start_time_problems",
    "timezone_problems",
    "validate_schedule",
    "wait_order_problems",
    "wait_problems",
    "window_order_problems",
]

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
MAX_EVERY_MINUTES = 1440
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


# -- one check per field ---------------------------------------------------------------------
# Each returns the field's problems as messages (empty when it is fine). validate_schedule runs
# them over schedule JSON, and the API's request model (engine.domain.models.ScheduleIn) runs the
# same ones from its field validators, so both refuse the same values with the same words.


def timezone_problems(value: object) -> list[str]:
    return [] if is_timezone(value) else ["must be an IANA time zone name such as Europe/Paris"]


def day_numbers(value: object) -> frozenset[int]:
    """The ``date.weekday()`` numbers of the known days in ``value`` (unknown ones left out)."""
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(WEEKDAYS.index(day.lower()) for day in value if isinstance(day, str) and day.lower() in WEEKDAYS)


def normalised_days(value: Sequence[str]) -> list[str]:
    """Lower-case, in week order, without repeats (how a schedule stores its days)."""
    lowered = {day.lower() for day in value}
    return [day for day in WEEKDAYS if day in lowered]


def days_problems(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return ["must be a list of mon, tue, wed, thu, fri, sat, sun"]
    if not value:
        return ["must contain at least one day"]
    return [f"unknown day {day!r}; use mon, tue, wed, thu, fri, sat, sun" for day in value
            if not (isinstance(day, str) and day.lower() in WEEKDAYS)]


def start_time_problems(value: object) -> list[str]:
    return [] if parse_hhmm(value, allow_24=False) is not None else ["must be HH:MM between 00:00 and 23:59"]


def end_time_problems(value: object) -> list[str]:
    return [] if parse_hhmm(value, allow_24=True) is not None else ["must be HH:MM between 00:00 and 24:00"]


def window_order_problems(start_time: object, end_time: object) -> list[str]:
    """``end_time``'s problem with ``start_time`` (only when both are well formed)."""
    start, end = parse_hhmm(start_time, allow_24=False), parse_hhmm(end_time, allow_24=True)
    return ["must be later than start_time"] if start is not None and end is not None and end <= start else []


def every_minutes_problems(value: object) -> list[str]:
    return [] if value is None or _int_in(value, 1, MAX_EVERY_MINUTES) else [
        f"must be null or an integer from 1 to {MAX_EVERY_MINUTES}"]


def send_window(timezone: object, days: object, start_time: object, end_time: object) -> Window | None:
    """The weekly window these fields describe, or None when one of them is not usable."""
    start, end = parse_hhmm(start_time, allow_24=False), parse_hhmm(end_time, allow_24=True)
    weekdays = day_numbers(days)
    if not is_timezone(timezone) or not weekdays or start is None or end is None or end <= start:
        return None
    return Window(str(timezone), weekdays, start, end)


def cron_problems(value: object, window: Window | None) -> list[str]:
    """A 5-field crontab that fires at all, and inside ``window`` when there is one."""
    if value is None:
        return []
    if not isinstance(value, str):
        return ["must be null or a 5-field crontab expression"]
    try:
        parse_cron(value)
    except ValueError as exc:
        return [f"invalid crontab expression: {exc}"]
    if next_fire_at_or_after(value, "UTC", _REFERENCE) is None:
        return ["never fires"]
    if window is not None and not _cron_fires_in_window(value, window):
        return ["never fires inside the send window"]
    return []


def wait_problems(value: object) -> list[str]:
    return [] if _int_in(value, 0, MAX_WAIT_SECONDS) else [f"must be an integer from 0 to {MAX_WAIT_SECONDS}"]


def wait_order_problems(low: object, high: object) -> list[str]:
    """``max_wait_seconds``' problem with ``min_wait_seconds`` (only when both are in range)."""
    if isinstance(low, int) and isinstance(high, int) and _int_in(low, 0, MAX_WAIT_SECONDS) \
            and _int_in(high, 0, MAX_WAIT_SECONDS) and low > high:
        return ["must be at least min_wait_seconds"]
    return []


def limit_problems(value: object) -> list[str]:
    """``max_per_hour``, ``daily_limit`` and the per-domain limits."""
    return [] if value is None or _int_in(value, 1) else ["must be null or a positive integer"]


def launch_at_problems(value: object) -> list[str]:
    if value is None:
        return []
    try:
        parse_launch_at(value)
    except ValueError as exc:
        return [str(exc)]
    return []


def flag_problems(value: object) -> list[str]:
    return [] if isinstance(value, bool) else ["must be true or false"]


def skip_dates_problems(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return ["must be a list of dates written YYYY-MM-DD"]
    if len(value) > MAX_SKIP_DATES:
        return [f"must hold at most {MAX_SKIP_DATES} dates"]
    problems = []
    for day in value:
        try:
            parse_skip_date(day)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def normalised_skip_dates(value: Iterable[object]) -> list[str]:
    """Sorted ``YYYY-MM-DD`` without repeats (how a schedule stores them)."""
    return sorted({parse_skip_date(day).isoformat() for day in value})


def holidays_problems(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return ["must be null or a country code such as FR or US-CA"]
    try:
        parse_holidays(value)
    except ValueError as exc:
        return [str(exc)]
    return []


def normalised_holidays(value: str | None) -> str | None:
    """The ``holidays`` package's spelling (``"us-ca"`` -> ``"US-CA"``)."""
    return None if value is None else format_holidays(*parse_holidays(value))


def validate_schedule(d: object) -> list[tuple[str, str]]:
    """Every problem of schedule JSON `d` as (field, message); empty when `d` is valid.

    Omitted fields take the contract's defaults (and are then valid); unknown fields are problems.
    """
    if not isinstance(d, Mapping):
        return [("schedule", "must be an object")]
    problems: list[tuple[str, str]] = []
    problems += [(str(k), "unknown field") for k in sorted(map(str, d)) if k not in SCHEDULE_DEFAULTS]
    values = {**SCHEDULE_DEFAULTS, **{k: v for k, v in d.items() if k in SCHEDULE_DEFAULTS}}

    def check(name: str, messages: list[str]) -> None:
        problems.extend((name, message) for message in messages)

    check("timezone", timezone_problems(values["timezone"]))
    check("days", days_problems(values["days"]))
    check("start_time", start_time_problems(values["start_time"]))
    check("end_time", end_time_problems(values["end_time"]))
    check("end_time", window_order_problems(values["start_time"], values["end_time"]))
    check("every_minutes", every_minutes_problems(values["every_minutes"]))
    window = send_window(values["timezone"], values["days"], values["start_time"], values["end_time"])
    check("cron", cron_problems(values["cron"], window))
    check("min_wait_seconds", wait_problems(values["min_wait_seconds"]))
    check("max_wait_seconds", wait_problems(values["max_wait_seconds"]))
    check("max_wait_seconds", wait_order_problems(values["min_wait_seconds"], values["max_wait_seconds"]))
    for name in ("max_per_hour", "daily_limit", "max_per_domain_per_hour", "max_per_domain_per_day"):
        check(name, limit_problems(values[name]))
    check("launch_at", launch_at_problems(values["launch_at"]))
    check("use_contact_timezone", flag_problems(values["use_contact_timezone"]))
    check("skip_dates", skip_dates_problems(values["skip_dates"]))
    check("holidays", holidays_problems(values["holidays"]))
    return problems
