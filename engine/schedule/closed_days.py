"""Days a schedule never sends on: its ``skip_dates`` and its country's public holidays.

Both are *local calendar days* of whichever zone a window is read in (the campaign's, or the
contact's with ``use_contact_timezone``), so the same :class:`ClosedDays` serves every window of a
campaign. Holiday calendars come from the ``holidays`` package; a year's set is computed once per
(country, subdivision, year) and then answered by a set lookup, because the slot search asks about
the same few days thousands of times per tick and per forecast.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

import holidays as holiday_calendars

__all__ = ["ClosedDays", "closed_days", "holiday_dates", "parse_holidays", "parse_skip_date"]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_skip_date(value: object) -> date:
    """A `date` from a ``date`` or a ``"YYYY-MM-DD"`` string; ValueError for anything else.

    Only the strict form is accepted (no datetimes, no week dates) so that a stored schedule reads
    the same way everywhere it is parsed (the API model, the planner, a replay).
    """
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date written YYYY-MM-DD")


@lru_cache(maxsize=1)
def _supported() -> Mapping[str, tuple[str, ...]]:
    """Country code -> its subdivision codes, as the installed ``holidays`` release knows them."""
    return {country: tuple(subdivs) for country, subdivs in holiday_calendars.list_supported_countries().items()}


@lru_cache(maxsize=256)
def parse_holidays(value: str) -> tuple[str, str | None]:
    """(country, subdivision or None) for ``"FR"`` or ``"US-CA"``, in the package's own spelling.

    Case does not matter (``"us-ca"`` is ``("US", "CA")``). ValueError, with a message that says
    what is wrong, for an unknown country or a subdivision the country does not have.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a country code such as FR, optionally with a subdivision such as US-CA")
    country_part, _, subdiv_part = value.strip().partition("-")
    supported = _supported()
    country = country_part.upper()
    if country not in supported:
        raise ValueError(f"unknown holiday country {country_part!r}; use an ISO 3166 code such as FR or US")
    if not subdiv_part:
        return country, None
    wanted = subdiv_part.upper()
    for subdiv in supported[country]:
        if subdiv.upper() == wanted:
            return country, subdiv
    raise ValueError(f"country {country} has no holiday subdivision {subdiv_part!r}")


def format_holidays(country: str, subdiv: str | None) -> str:
    """The schedule's ``holidays`` text for (country, subdivision)."""
    return country if subdiv is None else f"{country}-{subdiv}"


@lru_cache(maxsize=1024)
def holiday_dates(country: str, subdiv: str | None, year: int) -> frozenset[date]:
    """The public holidays (observed days included) of `country` / `subdiv` in `year`."""
    calendar = holiday_calendars.country_holidays(country, subdiv=subdiv, years=year)
    return frozenset(day for day in calendar if day.year == year)


@dataclass(frozen=True, slots=True)
class ClosedDays:
    """Skip dates and a holiday calendar; hashable, so windows holding one can still be cached."""

    skip_dates: frozenset[date] = frozenset()
    country: str | None = None
    subdiv: str | None = None

    def is_closed(self, day: date) -> bool:
        """True when local calendar day `day` is a skip date or a public holiday."""
        if day in self.skip_dates:
            return True
        return self.country is not None and day in holiday_dates(self.country, self.subdiv, day.year)

    @property
    def search_days(self) -> int:
        """Extra days a search for the next open day may have to walk over.

        Each closed day can hide at most one allowed weekday, which at worst is a week away
        from the next (a one-day-a-week window); holidays are counted generously per year.
        """
        return 7 * (len(self.skip_dates) + (40 if self.country is not None else 0))


@lru_cache(maxsize=1024)
def _closed_days(skip_dates: tuple[date, ...], calendar: str | None) -> ClosedDays | None:
    if not skip_dates and calendar is None:
        return None
    country, subdiv = (None, None) if calendar is None else parse_holidays(calendar)
    return ClosedDays(frozenset(skip_dates), country, subdiv)


def closed_days(skip_dates: Iterable[date], calendar: str | None) -> ClosedDays | None:
    """The :class:`ClosedDays` of a schedule, or None when it closes no day (the common case)."""
    return _closed_days(tuple(skip_dates), calendar)
