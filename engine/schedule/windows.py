"""Send windows (days x [start_time, end_time) in a time zone) and step delays.

A window is one interval per allowed local calendar day, from the instant the clock first shows
``start_time`` to the instant it first shows ``end_time`` (``24:00`` is the next midnight). Both
ends go through :func:`~engine.schedule.tzutil.resolve_wall`, so on a spring-forward day a
window opening at a missing time opens at the jump, and on a fall-back day a window ending inside
the repeated hour ends at the first pass and does not reopen on the second: each day's window is a
single interval, never counted twice. A window that falls entirely in a DST gap is empty that day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from engine.schedule.closed_days import ClosedDays
from engine.schedule.tzutil import as_utc, is_timezone, local_date, resolve_wall, wall, zone

if TYPE_CHECKING:
    from engine.schedule.model import Delay, ScheduleSpec

__all__ = [
    "Window",
    "add_delay",
    "effective_timezone",
    "in_window",
    "next_window_open",
    "window_close",
    "window_for",
]

# Seven days always contain an allowed weekday; a few more cover days emptied by a DST gap.
_SEARCH_DAYS = 15


@lru_cache(maxsize=16384)
def _day_bounds(tz_name: str, day: date, start: int, end: int) -> tuple[datetime, datetime] | None:
    tz = zone(tz_name)
    midnight = datetime.combine(day, time())
    opens = resolve_wall(midnight + timedelta(minutes=start), tz)
    closes = resolve_wall(midnight + timedelta(minutes=end), tz)
    return (opens, closes) if opens < closes else None


@dataclass(frozen=True, slots=True)
class Window:
    """The send window of one schedule in one time zone; hashable so results can be cached.

    `closed`: the schedule's skip dates and holidays, read as local days of *this* window's zone
    (so a contact-zone window closes on the contact's calendar day). A closed day has no window
    at all, which is all `contains`, `next_open`, `close` and the planner's slot search need.
    """

    timezone: str
    weekdays: frozenset[int]  # 0 = Monday .. 6 = Sunday
    start_minute: int
    end_minute: int  # up to 1440 (24:00)
    closed: ClosedDays | None = None
    # The last interval found open: the planner asks about moments inside one window interval again
    # and again (every send of a day), and each full answer converts the moment to local time.
    # Any interval of this window is a right answer for a moment inside it, so a stale or racing
    # value is harmless; it takes no part in equality, hashing or repr.
    _last: tuple[datetime, datetime] | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def bounds(self, day: date) -> tuple[datetime, datetime] | None:
        """The window of local day `day` as UTC [open, close), or None when there is none."""
        if day.weekday() not in self.weekdays:
            return None
        if self.closed is not None and self.closed.is_closed(day):
            return None
        return _day_bounds(self.timezone, day, self.start_minute, self.end_minute)

    def contains(self, at: datetime) -> bool:
        """True when instant `at` is inside the window."""
        last = self._last
        if last is not None and last[0] <= at < last[1]:
            return True
        bounds = self.bounds(local_date(at, zone(self.timezone)))
        if bounds is not None and bounds[0] <= at < bounds[1]:
            object.__setattr__(self, "_last", bounds)
            return True
        return False

    def _next_bounds(self, at: datetime) -> tuple[datetime, datetime]:
        last = self._last
        if last is not None and last[0] <= at < last[1]:
            return last  # intervals never overlap: the one holding `at` is the first to close after it
        day = local_date(at, zone(self.timezone))
        search = _SEARCH_DAYS if self.closed is None else _SEARCH_DAYS + self.closed.search_days
        for offset in range(search):
            bounds = self.bounds(day + timedelta(days=offset))
            if bounds is not None and at < bounds[1]:
                object.__setattr__(self, "_last", bounds)
                return bounds
        raise ValueError(f"window {self} never opens after {at.isoformat()}")

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when inside the window, else the next moment the window opens."""
        opens, _ = self._next_bounds(at)
        return max(opens, at)

    def close(self, at: datetime) -> datetime:
        """When the window open at `at` closes (or, if closed at `at`, the next one)."""
        return self._next_bounds(at)[1]


def effective_timezone(spec: ScheduleSpec, contact_tz: str | None = None) -> str:
    """The zone the window is read in: the contact's when asked for and known, else the campaign's.

    An unknown contact zone falls back to the campaign's rather than blocking the contact.
    """
    if spec.use_contact_timezone and contact_tz and is_timezone(contact_tz):
        return contact_tz
    return spec.timezone


def window_for(spec: ScheduleSpec, contact_tz: str | None = None) -> Window:
    """The :class:`Window` of `spec` for a contact living in `contact_tz` (or None)."""
    return _window(
        effective_timezone(spec, contact_tz), spec.weekday_numbers, spec.start_minute, spec.end_minute, spec.closed_days
    )


@lru_cache(maxsize=4096)
def _window(tz: str, weekdays: frozenset[int], start: int, end: int, closed: ClosedDays | None) -> Window:
    return Window(timezone=tz, weekdays=weekdays, start_minute=start, end_minute=end, closed=closed)


def in_window(spec: ScheduleSpec, at: datetime, contact_tz: str | None = None) -> bool:
    """True when `spec` allows sending at `at` to a contact in `contact_tz`."""
    return window_for(spec, contact_tz).contains(as_utc(at, "at"))


def next_window_open(spec: ScheduleSpec, at: datetime, contact_tz: str | None = None) -> datetime:
    """`at` itself when inside the window, else the next opening (UTC)."""
    return window_for(spec, contact_tz).next_open(as_utc(at, "at"))


def window_close(spec: ScheduleSpec, at: datetime, contact_tz: str | None = None) -> datetime:
    """End (UTC) of the window open at `at`, or of the next window when `at` is outside one.

    Each local day has its own window, so a 00:00-24:00 window closes at every midnight even when
    the next day's window opens at that same instant.
    """
    return window_for(spec, contact_tz).close(as_utc(at, "at"))


def add_delay(sent_at: datetime, delay: Delay, tz: str, closed: ClosedDays | None = None) -> datetime:
    """`sent_at` plus `delay`, in zone `tz` (UTC result).

    Days are calendar days on the local wall clock (a 1-day delay keeps the local time of day
    across a DST change); with ``business_days`` only Monday-Friday count, so one business day
    after a Friday or a Saturday is the Monday. `closed` (the schedule's skip dates and holidays,
    as local days of `tz`) are not business days either: a holiday is nobody's working day, so
    "2 business days later" must not count it. Hours and minutes are then added as elapsed time.
    """
    sent_at = as_utc(sent_at, "sent_at")
    base = sent_at
    if delay.days:
        tzinfo = zone(tz)
        local = wall(sent_at, tzinfo)
        day = local.date()
        if delay.business_days:
            remaining = delay.days
            while remaining:
                day += timedelta(days=1)
                if day.weekday() < 5 and (closed is None or not closed.is_closed(day)):
                    remaining -= 1
        else:
            day += timedelta(days=delay.days)
        base = resolve_wall(datetime.combine(day, local.time()), tzinfo)
    return base + timedelta(hours=delay.hours, minutes=delay.minutes)
