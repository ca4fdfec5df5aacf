"""Request bodies of the contract, validated with pydantic (unknown fields are errors).

The same models serve the Python API and REST, so both refuse the same input the same way.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from engine.domain.definition import CampaignSettings, StepDefinition, VariantDefinition, WinnerMetric, WinnerRule
from engine.errors import ValidationFailed
from engine.schedule.model import Delay, ScheduleSpec
from engine.schedule.validation import (
    MAX_EVERY_MINUTES,
    MAX_SKIP_DATES,
    MAX_WAIT_SECONDS,
    cron_problems,
    days_problems,
    end_time_problems,
    every_minutes_problems,
    holidays_problems,
    launch_at_problems,
    limit_problems,
    normalised_days,
    normalised_holidays,
    normalised_skip_dates,
    send_window,
    skip_dates_problems,
    start_time_problems,
    timezone_problems,
    wait_order_problems,
    wait_problems,
    window_order_problems,
)

# The contract's defaults, kept once by the engine's own types: a field left out of a request
# gets the value a definition stored without it is read with.
_SCHEDULE = ScheduleSpec()
_SETTINGS = CampaignSettings()
_STEP = StepDefinition()
_DELAY = Delay()
_VARIANT = VariantDefinition(id="A")
_WINNER = WinnerRule()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def check_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address: {exc}") from exc


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except Exception as exc:  # noqa: BLE001 - zoneinfo raises several kinds
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = "unknown field" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
        out.append({"field": field, "message": message})
    return out


def parse(model: type[Strict], data: Any) -> Any:
    """Validate ``data`` into ``model`` or raise :class:`ValidationFailed`."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "body", "message": "a JSON object is required"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


# -- senders ----------------------------------------------------------------------------------
class SmtpIn(Strict):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"


class ImapIn(Strict):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    username: str
    password: str
    security: Literal["tls", "starttls", "none"] = "tls"
    folder: str = "INBOX"


class WarmupIn(Strict):
    """A new mailbox's warm-up: ``start`` emails on its first send day, ``increase_per_day`` more
    each day after, up to ``target`` (and never above the sender's ``daily_limit``)."""

    start: int = Field(ge=1, le=100_000)
    increase_per_day: int = Field(ge=0, le=100_000)
    target: int = Field(ge=1, le=100_000)

    @model_validator(mode="after")
    def _start_below_target(self) -> WarmupIn:
        if self.start > self.target:
            raise ValueError("warmup.start must not be above warmup.target")
        return self


class SenderIn(Strict):
    email: str
    from_name: str | None = Field(default=None, max_length=255)
    smtp: SmtpIn
    imap: ImapIn | None = None
    daily_limit: int = Field(default=50, ge=1, le=100_000)
    daily_limit_variation_pct: float = Field(default=0, ge=0, le=100)
    bounce_rate_threshold: float = Field(default=8.0, gt=0, le=100)
    max_connections: int = Field(default=4, ge=1, le=100)
    warmup: WarmupIn | None = None

    _email = field_validator("email")(lambda cls, v: check_email(v))


class SenderPatch(Strict):
    email: str | None = None
    from_name: str | None = Field(default=None, max_length=255)
    smtp: SmtpIn | None = None
    imap: ImapIn | None = None
    daily_limit: int | None = Field(default=None, ge=1, le=100_000)
    daily_limit_variation_pct: float | None = Field(default=None, ge=0, le=100)
    bounce_rate_threshold: float | None = Field(default=None, gt=0, le=100)
    max_connections: int | None = Field(default=None, ge=1, le=100)
    warmup: WarmupIn | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return None if v is None else check_email(v)


# -- contacts ---------------------------------------------------------------------------------
class ContactIn(Strict):
    email: str
    first_name: str | None = Field(default=None, max_length=255)
    last_name: str | None = Field(default=None, max_length=255)
    company: str | None = Field(default=None, max_length=255)
    timezone: str | None = None
    custom_fields: dict[str, str | int | float | bool | None] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return check_email(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None or v == "" else check_timezone(v)


class ContactPatch(Strict):
    email: str | None = None
    first_name: str | None = Field(default=None, max_length=255)
    last_name: str | None = Field(default=None, max_length=255)
    company: str | None = Field(default=None, max_length=255)
    timezone: str | None = None
    custom_fields: dict[str, str | int | float | bool | None] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return None if v is None else check_email(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None or v == "" else check_timezone(v)


class ListIn(Strict):
    name: str = Field(min_length=1, max_length=255)


class ContactIdsIn(Strict):
    contact_ids: list[str] = Field(min_length=1, max_length=10_000)


class SuppressionIn(Strict):
    email: str | None = None
    domain: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _one(self) -> SuppressionIn:
        if (self.email is None) == (self.domain is None):
            raise ValueError("give exactly one of email or domain")
        if self.email is not None:
            self.email = check_email(self.email)
        if self.domain is not None:
            d = self.domain.strip().lower().lstrip("@")
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
                raise ValueError("invalid domain")
            self.domain = d
        return self


# -- campaigns --------------------------------------------------------------------------------
class DelayIn(Strict):
    days: int = Field(default=_DELAY.days, ge=0, le=365)
    hours: int = Field(default=_DELAY.hours, ge=0, le=10_000)
    minutes: int = Field(default=_DELAY.minutes, ge=0, le=100_000)
    business_days: bool = _DELAY.business_days


class VariantIn(Strict):
    """One A/B variant of a step: what it leaves out (None) is the step's own subject or body."""

    id: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    subject: str | None = Field(default=None, max_length=998)
    body_html: str | None = Field(default=None, max_length=1_000_000)
    body_text: str | None = Field(default=None, max_length=1_000_000)
    weight: int = Field(default=_VARIANT.weight, ge=1, le=100)


class WinnerIn(Strict):
    """Auto-winner: once the step has sent ``after_sends`` emails across its variants, the best
    variant by ``metric`` gets every later email of the step."""

    metric: WinnerMetric = _WINNER.metric
    after_sends: int = Field(default=_WINNER.after_sends, ge=1, le=1_000_000)


class StepIn(Strict):
    subject: str = Field(default=_STEP.subject, max_length=998)
    body_html: str = Field(default=_STEP.body_html, max_length=1_000_000)
    body_text: str | None = Field(default=_STEP.body_text, max_length=1_000_000)
    delay: DelayIn = Field(default_factory=DelayIn)
    same_thread: bool = _STEP.same_thread
    variants: list[VariantIn] | None = Field(default=None, min_length=2, max_length=5)
    winner: WinnerIn | None = None
    # From a workflow graph: the email node's id (in stats/steps and activity), and per-step tracking
    # that overrides the campaign's settings when given.
    node_id: str | None = Field(default=_STEP.node_id, max_length=255)
    track_opens: bool | None = _STEP.track_opens
    track_clicks: bool | None = _STEP.track_clicks

    @model_validator(mode="after")
    def _variants(self) -> StepIn:
        """Variant ids default to A, B, ... by position (stored, so a later reorder keeps each email's
        variant meaning the same content); they must be unique, as stats and the winner name them."""
        if self.variants is None:
            if self.winner is not None:
                raise ValueError("winner needs variants")
            return self
        for position, variant in enumerate(self.variants):
            if variant.id is None:
                variant.id = chr(ord("A") + position)
        ids = [variant.id for variant in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("variant ids must be unique")
        return self


def _refuse(problems: list[str]) -> None:
    """Raise the shared check's problems for pydantic to report under the field's name."""
    if problems:
        raise ValueError("; ".join(problems))


# A schedule is checked by the same functions as engine.schedule.validate_schedule (field by field,
# so each problem is reported under its own field) with the same defaults (ScheduleSpec's). The
# rules that tie two fields together (the window's order, the waits' order) are reported under
# ``schedule``, the cron's fit in the window under ``schedule.cron``. (Comments, not a docstring:
# a model's docstring becomes its description in the public OpenAPI document.)
class ScheduleIn(Strict):
    timezone: str = _SCHEDULE.timezone
    days: list[str] = Field(default_factory=lambda: list(_SCHEDULE.days))
    start_time: str = _SCHEDULE.start_time
    end_time: str = _SCHEDULE.end_time
    every_minutes: int | None = Field(default=_SCHEDULE.every_minutes, ge=1, le=MAX_EVERY_MINUTES)
    cron: str | None = _SCHEDULE.cron
    min_wait_seconds: int = Field(default=_SCHEDULE.min_wait_seconds, ge=0, le=MAX_WAIT_SECONDS)
    max_wait_seconds: int = Field(default=_SCHEDULE.max_wait_seconds, ge=0, le=MAX_WAIT_SECONDS)
    max_per_hour: int | None = Field(default=_SCHEDULE.max_per_hour, ge=1)
    daily_limit: int | None = Field(default=_SCHEDULE.daily_limit, ge=1)
    max_per_domain_per_hour: int | None = Field(
        default=_SCHEDULE.max_per_domain_per_hour, ge=1,
        description="Per sender and recipient domain, per clock hour in the schedule's zone.")
    max_per_domain_per_day: int | None = Field(
        default=_SCHEDULE.max_per_domain_per_day, ge=1,
        description="Per sender and recipient domain, per calendar day in the schedule's zone.")
    launch_at: datetime | None = _SCHEDULE.launch_at
    use_contact_timezone: bool = _SCHEDULE.use_contact_timezone
    skip_dates: list[str] = Field(default_factory=list, max_length=MAX_SKIP_DATES)
    holidays: str | None = _SCHEDULE.holidays

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        _refuse(timezone_problems(v))
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        _refuse(days_problems(v))
        return normalised_days(v)

    @field_validator("start_time")
    @classmethod
    def _start(cls, v: str) -> str:
        _refuse(start_time_problems(v))
        return v

    @field_validator("end_time")
    @classmethod
    def _end(cls, v: str) -> str:
        _refuse(end_time_problems(v))
        return v

    @field_validator("every_minutes")
    @classmethod
    def _every(cls, v: int | None) -> int | None:
        _refuse(every_minutes_problems(v))
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Parsed as the planner parses it (standard weekday numbers), and it must fire inside
        the window of the fields before it."""
        window = send_window(info.data.get("timezone"), info.data.get("days"), info.data.get("start_time"),
                             info.data.get("end_time"))
        _refuse(cron_problems(v, window))
        return v

    @field_validator("min_wait_seconds", "max_wait_seconds")
    @classmethod
    def _wait(cls, v: int) -> int:
        _refuse(wait_problems(v))
        return v

    @field_validator("max_per_hour", "daily_limit", "max_per_domain_per_hour", "max_per_domain_per_day")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        _refuse(limit_problems(v))
        return v

    @field_validator("launch_at")
    @classmethod
    def _launch_at(cls, v: datetime | None) -> datetime | None:
        _refuse(launch_at_problems(v))
        return v

    @field_validator("skip_dates")
    @classmethod
    def _skip_dates(cls, v: list[str]) -> list[str]:
        """Strict YYYY-MM-DD (the planner reads the stored JSON), kept sorted without repeats."""
        _refuse(skip_dates_problems(v))
        return normalised_skip_dates(v)

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        """A country (``FR``) or country-subdivision (``US-CA``) the ``holidays`` package knows."""
        _refuse(holidays_problems(v))
        return normalised_holidays(v)

    @model_validator(mode="after")
    def _order(self) -> ScheduleIn:
        _refuse([f"end_time {problem}" for problem in window_order_problems(self.start_time, self.end_time)]
                + [f"max_wait_seconds {problem}"
                   for problem in wait_order_problems(self.min_wait_seconds, self.max_wait_seconds)])
        return self


# Campaign settings; the defaults are engine.domain.definition.CampaignSettings'.
class SettingsIn(Strict):
    stop_on_reply: bool = _SETTINGS.stop_on_reply
    stop_on_company_reply: bool = _SETTINGS.stop_on_company_reply
    ignore_out_of_office: bool = _SETTINGS.ignore_out_of_office
    skip_if_enrolled_elsewhere: bool = _SETTINGS.skip_if_enrolled_elsewhere
    skip_previously_bounced: bool = _SETTINGS.skip_previously_bounced
    skip_previously_replied: bool = _SETTINGS.skip_previously_replied
    verify_mx: bool = _SETTINGS.verify_mx
    allow_free_email_domains: bool = _SETTINGS.allow_free_email_domains
    track_opens: bool = _SETTINGS.track_opens
    track_clicks: bool = _SETTINGS.track_clicks
    unsubscribe_link: bool = _SETTINGS.unsubscribe_link
    bounce_rate_threshold: float = Field(default=_SETTINGS.bounce_rate_threshold, gt=0, le=100)
    # Percent of sent emails reported as spam; 0.3 is Gmail's line for bulk senders.
    complaint_rate_threshold: float = Field(default=_SETTINGS.complaint_rate_threshold, ge=0, le=100)
    # soft bounces in a row that suppress an address
    soft_bounce_limit: int = Field(default=_SETTINGS.soft_bounce_limit, ge=1, le=1000)
    manual_batches: bool = _SETTINGS.manual_batches
    # An evergreen campaign stays active with nothing open, to take enrollments at any time;
    # POST /v1/campaigns/{id}/complete ends it.
    evergreen: bool = _SETTINGS.evergreen
    auto_enroll: AutoEnrollIn | None = Field(default=None, description=(
        "Enroll contacts as they enter this selection: members of one of `list_ids` (when given) that "
        "match `filter` (when given), checked when a contact is created, updated, imported or added to a "
        "list, with the skip rules and events of a manual enroll. Only while the campaign is `active`; "
        "launching does not enroll the contacts already selected. null turns it off."))


class WorkflowNode(Strict):
    id: str
    type: Literal["start", "email", "delay", "end"]
    data: dict[str, Any] = Field(default_factory=dict)


class WorkflowEdge(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from")
    to: str


class WorkflowIn(Strict):
    nodes: list[WorkflowNode]
    edges: list[WorkflowEdge]


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=10_000)
    emoji: str | None = Field(default=None, max_length=16)
    folder: str | None = Field(default=None, max_length=255)
    tags: list[str] = Field(default_factory=list, max_length=50)
    goal: str | None = Field(default=None, max_length=64)
    outreach_id: str | None = Field(default=None, max_length=255)
    sender_ids: list[str] = Field(default_factory=list, max_length=100)
    schedule: ScheduleIn = Field(default_factory=ScheduleIn)
    settings: SettingsIn = Field(default_factory=SettingsIn)
    steps: list[StepIn] = Field(default_factory=list, max_length=50)
    workflow: WorkflowIn | None = None


class CampaignPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    emoji: str | None = Field(default=None, max_length=16)
    folder: str | None = Field(default=None, max_length=255)
    tags: list[str] | None = Field(default=None, max_length=50)
    goal: str | None = Field(default=None, max_length=64)
    outreach_id: str | None = Field(default=None, max_length=255)
    sender_ids: list[str] | None = None
    schedule: ScheduleIn | None = None
    settings: SettingsIn | None = None
    steps: list[StepIn] | None = None
    workflow: WorkflowIn | None = None


class RuleIn(Strict):
    field: str
    op: Literal["eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in", "exists"]
    value: Any = None


class FilterIn(Strict):
    operator: Literal["and", "or"] = "and"
    rules: list[RuleIn | FilterIn] = Field(default_factory=list)


class AutoEnrollIn(Strict):
    """``settings.auto_enroll``: which contacts a campaign takes by itself, as they come.

    The same selection as an enroll request's ``list_ids`` and ``filter`` (with both: the list
    members that match the filter). A contact is enrolled when a command moves it into the
    selection (created matching, updated into the filter, added to one of the lists), so that
    one already in it is not enrolled again by every later edit. With neither lists nor a
    filter nothing is selected. List ids must name lists of the campaign's workspace.
    """

    list_ids: list[str] = Field(default_factory=list, max_length=100)
    filter: FilterIn | None = None


class DispatchIn(Strict):
    """``POST /v1/campaigns/{id}/dispatch``: parsed like every other body, so an integral float
    (``2.0``) is the integer JSON Schema says it is, and a fraction, a string or 0 is refused."""

    batch_number: int | None = Field(default=None, ge=1)


class EnrollIn(Strict):
    contact_ids: list[str] | None = None
    list_ids: list[str] | None = None
    filter: FilterIn | None = None
    batch_number: int | None = Field(default=None, ge=1)
    priority: int = Field(default=0, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _one(self) -> EnrollIn:
        if self.contact_ids is None and self.list_ids is None and self.filter is None:
            raise ValueError("give contact_ids, list_ids or filter")
        return self


class WebhookIn(Strict):
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(min_length=1)
    secret: str | None = Field(default=None, max_length=255)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("url must be http or https")
        return v


def dump_schedule(s: ScheduleIn) -> dict[str, Any]:
    data = s.model_dump()
    if s.launch_at is not None:
        from events.registry import format_time

        data["launch_at"] = format_time(s.launch_at)
    return data
