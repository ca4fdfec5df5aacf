"""Clocks: every moment the engine uses comes from one of these, never from the wall clock directly.

Tests and the demo use :class:`ManualClock` so that days pass in milliseconds and results never
depend on timing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current time (timezone-aware UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("ManualClock needs a timezone-aware datetime")
    return value.astimezone(UTC)


class ManualClock:
    """A clock that only moves when told to: `advance` and `set`."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a ManualClock never goes backwards")
        self._now = self._now + delta
        return self._now

    def set(self, value: datetime) -> datetime:
        value = _aware(value)
        if value < self._now:
            raise ValueError("a ManualClock never goes backwards")
        self._now = value
        return self._now
