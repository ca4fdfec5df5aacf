"""Inputs of the planner: schedules, campaigns, senders, queued emails and what was already sent.

All values are frozen: the planner is a pure function of them, which is what lets the tick and the
forecast agree. The lead's services build them from read models (``send_queue``, campaigns,
senders, the list of sends) and hand them in with ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from engine.schedule.closed_days import ClosedDays, closed_days, parse_skip_date
from engine.schedule.tzutil import as_utc, zone
from engine.schedule.validation import (
    SCHEDULE_DEFAULTS,
    WEEKDAYS,
    normalised_days,
    normalised_holidays,
    parse_hhmm,
    parse_launch_at,
    validate_schedule,
)

__all__ = [
    "CampaignPlan",
    "Delay",
    "InvalidSchedule",
    "LastSend",
    "QueueItem",
    "ScheduleSpec",
    "SendRecord",
    "SenderPlan",
    "Usage",
    "Warmup",
    "validate_schedule",
]


class InvalidSchedule(ValueError):
    """A schedule that :func:`validate_schedule` rejects; `problems` lists every (field, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A campaign's schedule (contract section 3), checked on construction.

    Defaults are the contract's. Constructing an invalid spec raises :class:`InvalidSchedule`;
    use :func:`validate_schedule` first to report problems instead.

    `skip_dates` (dates or ``YYYY-MM-DD`` strings) end up sorted without repeats, and `holidays`
    in the ``holidays`` package's spelling (``"us-ca"`` -> ``"US-CA"``), so equal schedules
    compare, hash and serialise equal.
    """

    timezone: str = "UTC"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    start_time: str = "09:00"
    end_time: str = "17:00"
    every_minutes: int | None = None
    cron: str | None = None
    min_wait_seconds: int = 120
    max_wait_seconds: int = 420
    max_per_hour: int | None = None
    daily_limit: int | None = None
    max_per_domain_per_hour: int | None = None
    max_per_domain_per_day: int | None = None
    launch_at: datetime | None = None
    use_contact_timezone: bool = False
    skip_dates: tuple[date, ...] = ()
    holidays: str | None = None

    def __post_init__(self) -> None:
        problems = validate_schedule(self._raw())
        if problems:
            raise InvalidSchedule(problems)
        object.__setattr__(self, "days", tuple(normalised_days(self.days)))
        if self.launch_at is not None:
            object.__setattr__(self, "launch_at", parse_launch_at(self.launch_at))
        object.__setattr__(self, "skip_dates", tuple(sorted({parse_skip_date(d) for d in self.skip_dates})))
        object.__setattr__(self, "holidays", normalised_holidays(self.holidays))

    def _raw(self) -> dict[str, object]:
        return {
            "timezone": self.timezone,
            "days": list(self.days) if isinstance(self.days, list | tuple) else self.days,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "every_minutes": self.every_minutes,
            "cron": self.cron,
            "min_wait_seconds": self.min_wait_seconds,
            "max_wait_seconds": self.max_wait_seconds,
            "max_per_hour": self.max_per_hour,
            "daily_limit": self.daily_limit,
            "max_per_domain_per_hour": self.max_per_domain_per_hour,
            "max_per_domain_per_day": self.max_per_domain_per_day,
            "launch_at": self.launch_at,
            "use_contact_timezone": self.use_contact_timezone,
            "skip_dates": list(self.skip_dates) if isinstance(self.skip_dates, list | tuple) else self.skip_dates,
            "holidays": self.holidays,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScheduleSpec:
        """Build from schedule JSON, omitted fields taking the contract's defaults.

        ``launch_at`` may be an ISO 8601 string. Raises :class:`InvalidSchedule` with every problem.
        """
        problems = validate_schedule(d)
        if problems:
            raise InvalidSchedule(problems)
        values: dict[str, Any] = {**SCHEDULE_DEFAULTS, **d}
        return cls(
            timezone=values["timezone"],
            days=tuple(values["days"]),
            start_time=values["start_time"],
            end_time=values["end_time"],
            every_minutes=values["every_minutes"],
            cron=values["cron"],
            min_wait_seconds=values["min_wait_seconds"],
            max_wait_seconds=values["max_wait_seconds"],
            max_per_hour=values["max_per_hour"],
            daily_limit=values["daily_limit"],
            max_per_domain_per_hour=values["max_per_domain_per_hour"],
            max_per_domain_per_day=values["max_per_domain_per_day"],
            launch_at=None if values["launch_at"] is None else parse_launch_at(values["launch_at"]),
            use_contact_timezone=values["use_contact_timezone"],
            skip_dates=tuple(parse_skip_date(d) for d in values["skip_dates"]),
            holidays=values["holidays"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON shape (times ISO 8601 UTC with ``Z``)."""
        raw = self._raw()
        raw["days"] = list(self.days)
        raw["skip_dates"] = [day.isoformat() for day in self.skip_dates]
        if self.launch_at is not None:
            raw["launch_at"] = self.launch_at.isoformat().replace("+00:00", "Z")
        return raw

    @property
    def start_minute(self) -> int:
        """`start_time` in minutes after local midnight."""
        minutes = parse_hhmm(self.start_time, allow_24=False)
        assert minutes is not None  # checked in __post_init__
        return minutes

    @property
    def end_minute(self) -> int:
        """`end_time` in minutes after local midnight (1440 for 24:00)."""
        minutes = parse_hhmm(self.end_time, allow_24=True)
        assert minutes is not None  # checked in __post_init__
        return minutes

    @property
    def weekday_numbers(self) -> frozenset[int]:
        """Allowed days as ``date.weekday()`` numbers (0 = Monday)."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)

    @property
    def closed_days(self) -> ClosedDays | None:
        """The local days with no window (skip dates, holidays); None when there are none."""
        return closed_days(self.skip_dates, self.holidays)


@dataclass(frozen=True, slots=True)
class Delay:
    """A step's wait after the previous step was sent (for step 1, after the contact is due)."""

    days: int = 0
    hours: int = 0
    minutes: int = 0
    business_days: bool = False

    def __post_init__(self) -> None:
        if min(self.days, self.hours, self.minutes) < 0:
            raise ValueError("a delay cannot be negative")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Delay:
        """From the contract's step ``delay`` object; missing fields are 0 / false."""
        d = d or {}
        return cls(
            days=int(d.get("days") or 0),
            hours=int(d.get("hours") or 0),
            minutes=int(d.get("minutes") or 0),
            business_days=bool(d.get("business_days", False)),
        )


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """What the planner needs of a campaign. `step_delays[0]` is step 1's delay."""

    campaign_id: str
    workspace_id: str
    schedule: ScheduleSpec
    sender_ids: tuple[str, ...]
    step_delays: tuple[Delay, ...]
    active: bool = True


@dataclass(frozen=True, slots=True)
class SenderPlan:
    """What the planner needs of a sender (mailbox). `daily_limit` None means unlimited.

    `warmup`: a new mailbox's limit grows from its first send day (UTC, `first_send_day`; None
    while it has not sent) by `increase_per_day` from `start` up to `target` (see
    :func:`~engine.schedule.slots.effective_daily_limit`).
    """

    sender_id: str
    daily_limit: int | None = 50
    daily_limit_variation_pct: float = 0.0
    active: bool = True
    warmup: Warmup | None = None
    first_send_day: date | None = None


@dataclass(frozen=True, slots=True)
class Warmup:
    """A sender's warm-up: `start` emails on its first send day, `increase_per_day` more each day
    after, never more than `target`."""

    start: int
    increase_per_day: int
    target: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Warmup | None:
        if not d:
            return None
        return cls(int(d["start"]), int(d["increase_per_day"]), int(d["target"]))

    def limit_on(self, utc_day: date, first_send_day: date | None) -> int:
        """min(start + N x increase_per_day, target) on day N after the first send day (day 0)."""
        days = 0 if first_send_day is None else max(0, (utc_day - first_send_day).days)
        return min(self.start + days * self.increase_per_day, self.target)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueItem:
    """One scheduled email waiting to go.

    `due_at` already includes the step's delay. `sender_id` is the pinned sender (every step after
    the first goes through the sender of step 1, so follow-ups thread); None lets any of the
    campaign's active senders take it. `seq` is the enrollment order, for stable tie-breaks.
    """

    email_id: str
    enrollment_id: str
    campaign_id: str
    contact_id: str
    step: int
    due_at: datetime
    priority: int = 0
    sender_id: str | None = None
    contact_timezone: str | None = None
    seq: int = 0
    domain: str | None = None  # the recipient's, for the per-domain limits

    def __post_init__(self) -> None:
        object.__setattr__(self, "due_at", as_utc(self.due_at, "due_at"))


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One email already sent, as the lead reads it from the log to build a :class:`Usage`."""

    campaign_id: str
    sender_id: str
    workspace_id: str
    sent_at: datetime
    domain: str | None = None  # the recipient's


@dataclass(frozen=True, slots=True)
class LastSend:
    """The latest send of a (campaign, sender) pair and its number within that local day (1-based)."""

    at: datetime
    local_date: date
    seq: int


def _as_record(send: Any) -> SendRecord:
    if isinstance(send, SendRecord):
        record = send
    elif hasattr(send, "sent_at"):
        record = SendRecord(send.campaign_id, send.sender_id, send.workspace_id, send.sent_at,
                            getattr(send, "domain", None))
    else:
        campaign_id, sender_id, workspace_id, sent_at = send
        record = SendRecord(campaign_id, sender_id, workspace_id, sent_at)
    return SendRecord(record.campaign_id, record.sender_id, record.workspace_id, as_utc(record.sent_at, "sent_at"),
                      record.domain)


def _bump(counts: dict[Any, int], key: Any) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class Usage:
    """What was already sent, counted in the buckets the limits use. Immutable: `record` copies.

    * sender day: the **UTC** calendar day (a mailbox provider's quota does not follow the
      timezone of whichever campaign uses the mailbox);
    * campaign day and campaign hour: calendar day / hour in the **campaign's** timezone (hours
      are keyed by their UTC start, so a repeated fall-back hour is its own bucket);
    * workspace month: the **UTC** calendar month;
    * last send per (campaign, sender), with its sequence number within the campaign-local day,
      which seeds the next random wait;
    * the sender of each campaign's latest send, where sender rotation resumes (several sends of
      one instant are told apart by the order they were recorded in).
    """

    sender_days: Mapping[tuple[str, date], int] = field(default_factory=dict)
    campaign_days: Mapping[tuple[str, date], int] = field(default_factory=dict)
    campaign_hours: Mapping[tuple[str, datetime], int] = field(default_factory=dict)
    workspace_months: Mapping[tuple[str, int, int], int] = field(default_factory=dict)
    last_sends: Mapping[tuple[str, str], LastSend] = field(default_factory=dict)
    last_senders: Mapping[str, str] = field(default_factory=dict)
    domain_hours: Mapping[tuple[str, str, datetime], int] = field(default_factory=dict)
    domain_days: Mapping[tuple[str, str, date], int] = field(default_factory=dict)

    def sent_to_domain_in_hour(self, sender_id: str, domain: str, hour_start_utc: datetime) -> int:
        return self.domain_hours.get((sender_id, domain, hour_start_utc), 0)

    def sent_to_domain_on(self, sender_id: str, domain: str, local_day: date) -> int:
        return self.domain_days.get((sender_id, domain, local_day), 0)

    def sent_by_sender_on(self, sender_id: str, utc_day: date) -> int:
        return self.sender_days.get((sender_id, utc_day), 0)

    def sent_by_campaign_on(self, campaign_id: str, local_day: date) -> int:
        return self.campaign_days.get((campaign_id, local_day), 0)

    def sent_by_campaign_in_hour(self, campaign_id: str, hour_start_utc: datetime) -> int:
        return self.campaign_hours.get((campaign_id, hour_start_utc), 0)

    def sent_by_workspace_in_month(self, workspace_id: str, year: int, month: int) -> int:
        return self.workspace_months.get((workspace_id, year, month), 0)

    def last_send(self, campaign_id: str, sender_id: str) -> LastSend | None:
        return self.last_sends.get((campaign_id, sender_id))

    def last_sender(self, campaign_id: str) -> str | None:
        """The sender of the campaign's latest send (ties at one instant: the one recorded last)."""
        return self.last_senders.get(campaign_id)

    def record(
        self,
        *,
        campaign_id: str,
        sender_id: str,
        workspace_id: str,
        at: datetime,
        timezone: str = "UTC",
        domain: str | None = None,
    ) -> Usage:
        """The usage after one more send; `timezone` is the campaign's (for its day and hour, and
        the recipient `domain`'s hour and day at this sender)."""
        return self.owned().record_in_place(campaign_id=campaign_id, sender_id=sender_id, workspace_id=workspace_id,
                                            at=at, timezone=timezone, domain=domain)

    def owned(self) -> Usage:
        """A copy whose counters belong to the caller alone (for :meth:`record_in_place`)."""
        return Usage(dict(self.sender_days), dict(self.campaign_days), dict(self.campaign_hours),
                     dict(self.workspace_months), dict(self.last_sends), dict(self.last_senders),
                     dict(self.domain_hours), dict(self.domain_days))

    def record_in_place(self, *, campaign_id: str, sender_id: str, workspace_id: str, at: datetime,
                        timezone: str = "UTC", domain: str | None = None) -> Usage:
        """:meth:`record` without the copy: only for a usage from :meth:`owned` that nobody else
        holds (the forecast's, which records tens of thousands of sends: copying every counter
        at each one made it quadratic). Returns `self`."""
        maps: Any = (self.sender_days, self.campaign_days, self.campaign_hours, self.workspace_months,
                     self.last_sends, self.last_senders, self.domain_hours, self.domain_days)
        _apply(maps, campaign_id, sender_id, workspace_id, as_utc(at, "at"), timezone, domain)
        return self

    @classmethod
    def from_sends(cls, sends: Iterable[Any], campaigns: Mapping[str, CampaignPlan]) -> Usage:
        """Rebuild from the log: the same result as `record` applied to each send in time order.

        Each send is a :class:`SendRecord`, any object with the same attributes (a database row),
        or a (campaign_id, sender_id, workspace_id, sent_at) tuple; sent_at must be aware.
        Pass every send of the current UTC month and of the two days before it (local days and
        sequence numbers may start before the month does) and, whatever its age, the latest send
        of each (campaign, sender) pair, in log order (which breaks ties between sends of one
        instant). A campaign missing from `campaigns` is counted in UTC.
        """
        maps: _Maps = ({}, {}, {}, {}, {}, {}, {}, {})
        records = [_as_record(send) for send in sends]
        ordered = sorted(records, key=lambda s: s.sent_at)  # stable: sends of one instant keep log order
        for send in ordered:
            campaign = campaigns.get(send.campaign_id)
            tz = campaign.schedule.timezone if campaign is not None else "UTC"
            _apply(maps, send.campaign_id, send.sender_id, send.workspace_id, send.sent_at, tz, send.domain)
        return cls(*maps)


_Maps = tuple[dict[Any, int], dict[Any, int], dict[Any, int], dict[Any, int], dict[Any, LastSend], dict[str, str],
               dict[Any, int], dict[Any, int]]


def _apply(
    maps: _Maps,
    campaign_id: str,
    sender_id: str,
    workspace_id: str,
    at: datetime,
    tz_name: str,
    domain: str | None = None,
) -> None:
    sender_days, campaign_days, campaign_hours, months, last_sends, last_senders, domain_hours, domain_days = maps
    local = at.astimezone(zone(tz_name))  # once: the local day and hour both come from it (see hour_start)
    day = local.date()
    hour = at - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    if domain:
        _bump(domain_hours, (sender_id, domain, hour))
        _bump(domain_days, (sender_id, domain, day))
    _bump(sender_days, (sender_id, at.date()))
    _bump(campaign_days, (campaign_id, day))
    _bump(campaign_hours, (campaign_id, hour))
    _bump(months, (workspace_id, at.year, at.month))
    last = last_sends.get((campaign_id, sender_id))
    if last is None or at >= last.at:
        seq = last.seq + 1 if last is not None and last.local_date == day else 1
        last_sends[(campaign_id, sender_id)] = LastSend(at=at, local_date=day, seq=seq)
    previous = last_senders.get(campaign_id)
    if previous is None or at >= last_sends[(campaign_id, previous)].at:
        last_senders[campaign_id] = sender_id
