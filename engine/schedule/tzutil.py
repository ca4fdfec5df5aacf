"""Time-zone helpers: one rule, shared by windows, cron and usage, for wall times around DST changes.

Every instant in this package is a timezone-aware UTC ``datetime``; local wall times are naive
``datetime`` values that only exist inside these helpers. A wall time can be missing (spring
forward) or happen twice (fall back). The rule used everywhere is :func:`resolve_wall`: a wall time
means the *first* instant at which the clock shows it, and a wall time inside a gap means the
instant the clock jumps over it. Because windows, cron fire times and day boundaries all go through
that one function, nothing crashes on a missing time and nothing happens twice in a repeated hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "as_utc",
    "hour_start",
    "is_timezone",
    "local_date",
    "local_day_start",
    "next_month_start",
    "next_utc_midnight",
    "resolve_wall",
    "wall",
    "zone",
]

# Keys that zoneinfo accepts but that mean "whatever this machine is set to" or nothing at all:
# a schedule must mean the same thing on every node.
_MACHINE_DEPENDENT = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    if name in _MACHINE_DEPENDENT:
        raise ValueError(f"time zone {name!r} depends on the machine; use an IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; ValueError when there is none (never a KeyError or OSError)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"unknown time zone {name!r}")
    return _zone(name)


def is_timezone(name: object) -> bool:
    """True when `name` is an IANA time zone name this machine knows."""
    if not isinstance(name, str):
        return False
    try:
        zone(name)
    except ValueError:
        return False
    return True


def as_utc(value: datetime, what: str = "time") -> datetime:
    """`value` in UTC; a naive datetime is refused because its meaning would depend on the machine."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def wall(at: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall time shown in `tz` at instant `at`."""
    return at.astimezone(tz).replace(tzinfo=None)


def local_date(at: datetime, tz: ZoneInfo) -> date:
    """The calendar date in `tz` at instant `at`."""
    return at.astimezone(tz).date()


def resolve_wall(naive: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the clock in `tz` first shows `naive`, or jumps over it.

    An ambiguous wall time (fall back) resolves to its first occurrence; a missing one (spring
    forward) to the moment of the jump, i.e. the first instant whose wall time is later.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    offset = aware.utcoffset()
    if offset is not None and aware.replace(fold=1).utcoffset() == offset:
        return (naive - offset).replace(tzinfo=UTC)  # neither in a gap nor repeated: the usual case
    first = aware.astimezone(UTC)
    if wall(first, tz) == naive:
        return first
    other = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = (first, other) if first < other else (other, first)
    # wall(lo) < naive <= wall(hi): bisect on whole seconds (tz transitions fall on whole seconds).
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp()) + 1
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if wall(datetime.fromtimestamp(mid, UTC), tz) >= naive:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


@lru_cache(maxsize=8192)
def _day_start(day: date, tz: ZoneInfo) -> datetime:
    return resolve_wall(datetime.combine(day, time()), tz)


def local_day_start(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local calendar day `day` begins in `tz`."""
    return _day_start(day, tz)


def hour_start(at: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the local calendar hour containing `at` began.

    Computed by subtracting the local minutes and seconds from the instant, so the two hours that
    share a wall label on a fall-back night are two different buckets, never one.
    """
    local = at.astimezone(tz)
    return at.astimezone(UTC) - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def next_utc_midnight(at: datetime) -> datetime:
    """The start of the UTC calendar day after the one containing `at`."""
    day = at.astimezone(UTC).date() + timedelta(days=1)
    return datetime.combine(day, time(), tzinfo=UTC)


def next_month_start(at: datetime) -> datetime:
    """The start of the UTC calendar month after the one containing `at`."""
    at = at.astimezone(UTC)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)
