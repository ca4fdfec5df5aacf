"""5-field crontab schedules with their standard meaning, safe across DST changes.

Parsing is done by APScheduler 3.11 (``CronTrigger.from_crontab``), with three corrections:

* Day-of-week numbers. ``from_crontab`` counts 0 as *Monday* (a documented historical mistake of
  the 3.x series); a user writing ``1-5`` means Monday to Friday, as in every crontab. The
  day-of-week field is therefore translated to names before it reaches APScheduler (0 and 7 are
  Sunday, names are accepted too).
* Day-of-month *or* day-of-week. In a standard crontab, when both fields are restricted (neither
  starts with ``*``) a day matches if *either* matches; APScheduler requires both. Such an
  expression becomes two triggers whose fire times are merged.
* Time zones. With a zoneinfo zone, ``CronTrigger.get_next_fire_time`` returns wall times that do
  not exist on spring-forward nights and goes *back* in time through a fall-back hour (it can loop
  for ever). So the triggers run in UTC, where there is no DST, over the *local wall clock* of the
  campaign, and each matching wall time is mapped to an instant with
  :func:`~engine.schedule.tzutil.resolve_wall`: a repeated wall time fires once (its first
  occurrence), a missing one fires at the jump.

``get_next_fire_time(None, t)`` is *inclusive*: it may return ``t`` itself. :func:`next_fire_after`
is the strict variant the planner needs after a send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from apscheduler.triggers.cron import CronTrigger

from engine.schedule.tzutil import as_utc, resolve_wall, wall, zone

__all__ = ["CronSchedule", "next_fire_after", "next_fire_at_or_after", "parse_cron"]

_STANDARD_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# APScheduler's names, indexed by its own weekday numbers (0 = Monday).
_APS_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A fall-back hour repeats at most a few hundred matching minutes; this only guards against bugs.
_MAX_SKIPS = 10_000


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed crontab: one or two UTC triggers walked over local wall time."""

    expr: str
    triggers: tuple[CronTrigger, ...]

    def next_wall(self, probe: datetime) -> datetime | None:
        """First matching wall time at or after `probe` (a wall time labelled UTC)."""
        found = [t.get_next_fire_time(None, probe) for t in self.triggers]
        fires = [f for f in found if f is not None]
        return min(fires) if fires else None


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit():
        value = int(token)
        if not 0 <= value <= 7:
            raise ValueError(f"day of week {token!r} is out of range 0-7")
        return value
    if token in _STANDARD_DAYS:
        return _STANDARD_DAYS[token]
    raise ValueError(f"unknown day of week {token!r}")


def _standard_days(field: str) -> set[int]:
    """Days (0 = Sunday .. 6 = Saturday) matched by a standard crontab day-of-week field."""
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step in day of week {part!r}")
            step = int(step_text)
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _day_number(first), _day_number(last)
            if low > high:
                raise ValueError(f"day-of-week range {base!r} goes backwards")
        else:
            low = _day_number(base)
            high = 6 if slash else low
        days.update(value % 7 for value in range(low, high + 1, step))
    return days


def _aps_day_of_week(field: str) -> str:
    if field == "*":
        return "*"
    days = _standard_days(field)
    if not days:
        raise ValueError(f"day of week {field!r} matches no day")
    aps = sorted((day - 1) % 7 for day in days)
    return "*" if len(aps) == 7 else ",".join(_APS_DAYS[i] for i in aps)


@lru_cache(maxsize=256)
def parse_cron(expr: str) -> CronSchedule:
    """Parse a 5-field crontab (minute hour day month day-of-week); ValueError when it is invalid."""
    if not isinstance(expr, str):
        raise ValueError("cron must be a string")
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron needs 5 fields (minute hour day month day_of_week), got {len(fields)}")
    minute, hour, dom, month, dow = fields
    aps_dow = _aps_day_of_week(dow)
    if dom.startswith("*") or dow.startswith("*"):
        exprs = [f"{minute} {hour} {dom} {month} {aps_dow}"]
    else:  # standard crontab: day of month OR day of week
        exprs = [f"{minute} {hour} {dom} {month} *", f"{minute} {hour} * {month} {aps_dow}"]
    triggers = tuple(CronTrigger.from_crontab(e, timezone=UTC) for e in exprs)
    return CronSchedule(expr=expr, triggers=triggers)


def next_fire_at_or_after(expr: str, tz_name: str, at: datetime) -> datetime | None:
    """The first fire time of `expr` in `tz_name` at or after `at` (UTC), or None if it never fires."""
    return _next_fire(expr, tz_name, as_utc(at))


@lru_cache(maxsize=65_536)  # pure, and the planner asks the same questions again and again
def _next_fire(expr: str, tz_name: str, at: datetime) -> datetime | None:
    schedule = parse_cron(expr)
    tz = zone(tz_name)
    probe = wall(at, tz).replace(tzinfo=UTC)
    for _ in range(_MAX_SKIPS):
        fire = schedule.next_wall(probe)
        if fire is None:
            return None
        instant = resolve_wall(fire.replace(tzinfo=None), tz)
        if instant >= at:
            return instant
        # `at` is in the second pass of a repeated hour: this wall time already fired.
        probe = fire + timedelta(seconds=1)
    raise RuntimeError(f"cron {expr!r} did not advance past {at.isoformat()}")


def next_fire_after(expr: str, tz_name: str, at: datetime) -> datetime | None:
    """The first fire time strictly after `at`: the next slot after a send made at `at`."""
    return next_fire_at_or_after(expr, tz_name, as_utc(at) + timedelta(microseconds=1))
