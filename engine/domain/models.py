"""Request bodies of the contract, validated with pydantic (unknown fields are errors).

The same models serve the Python API and REST, so both refuse the same input the same way.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ValidationFailed
from engine.schedule.closed_days import format_holidays, parse_holidays, parse_skip_date

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    days: int = Field(default=0, ge=0, le=365)
    hours: int = Field(default=0, ge=0, le=10_000)
    minutes: int = Field(default=0, ge=0, le=100_000)
    business_days: bool = False


class VariantIn(Strict):
    """One A/B variant of a step: what it leaves out (None) is the step's own subject or body."""

    id: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    subject: str | None = Field(default=None, max_length=998)
    body_html: str | None = Field(default=None, max_length=1_000_000)
    body_text: str | None = Field(default=None, max_length=1_000_000)
    weight: int = Field(default=1, ge=1, le=100)


class WinnerIn(Strict):
    """Auto-winner: once the step has sent ``after_sends`` emails across its variants, the best
    variant by ``metric`` gets every later email of the step."""

    metric: Literal["reply_rate", "open_rate", "click_rate"] = "reply_rate"
    after_sends: int = Field(default=200, ge=1, le=1_000_000)


class StepIn(Strict):
    subject: str = Field(default="", max_length=998)
    body_html: str = Field(default="", max_length=1_000_000)
    body_text: str | None = Field(default=None, max_length=1_000_000)
    delay: DelayIn = Field(default_factory=DelayIn)
    same_thread: bool = True
    variants: list[VariantIn] | None = Field(default=None, min_length=2, max_length=5)
    winner: WinnerIn | None = None
    # From a workflow graph: the email node's id (in stats/steps and activity), and per-step tracking
    # that overrides the campaign's settings when given.
    node_id: str | None = Field(default=None, max_length=255)
    track_opens: bool | None = None
    track_clicks: bool | None = None

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


class ScheduleIn(Strict):
    timezone: str = "UTC"
    days: list[str] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start_time: str = "09:00"
    end_time: str = "17:00"
    every_minutes: int | None = Field(default=None, ge=1, le=1440)
    cron: str | None = None
    min_wait_seconds: int = Field(default=120, ge=0, le=86_400)
    max_wait_seconds: int = Field(default=420, ge=0, le=86_400)
    max_per_hour: int | None = Field(default=None, ge=1)
    daily_limit: int | None = Field(default=None, ge=1)
    max_per_domain_per_hour: int | None = Field(
        default=None, ge=1, description="Per sender and recipient domain, per clock hour in the schedule's zone.")
    max_per_domain_per_day: int | None = Field(
        default=None, ge=1, description="Per sender and recipient domain, per calendar day in the schedule's zone.")
    launch_at: datetime | None = None
    use_contact_timezone: bool = False
    skip_dates: list[str] = Field(default_factory=list, max_length=1000)
    holidays: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)

    @field_validator("skip_dates")
    @classmethod
    def _skip_dates(cls, v: list[str]) -> list[str]:
        """Strict YYYY-MM-DD (the planner reads the stored JSON), kept sorted without repeats."""
        return sorted({parse_skip_date(day).isoformat() for day in v})

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        """A country (``FR``) or country-subdivision (``US-CA``) the ``holidays`` package knows."""
        if v is None:
            return v
        return format_holidays(*parse_holidays(v))

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        days = [d.lower() for d in v]
        bad = [d for d in days if d not in DAYS]
        if bad or not days:
            raise ValueError(f"days must be a non-empty list of {', '.join(DAYS)}")
        return sorted(set(days), key=DAYS.index)

    @field_validator("start_time")
    @classmethod
    def _start(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("start_time must be HH:MM")
        return v

    @field_validator("end_time")
    @classmethod
    def _end(cls, v: str) -> str:
        if v != "24:00" and not _HHMM.match(v):
            raise ValueError("end_time must be HH:MM or 24:00")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        if len(v.split()) != 5:
            raise ValueError("cron must have 5 fields")
        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression: {exc}") from exc
        return v

    @field_validator("launch_at")
    @classmethod
    def _launch_at(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("launch_at needs a timezone (use Z for UTC)")
        return v

    @model_validator(mode="after")
    def _order(self) -> ScheduleIn:
        if self.end_time != "24:00" and self.end_time <= self.start_time:
            raise ValueError("end_time must be later than start_time")
        if self.min_wait_seconds > self.max_wait_seconds:
            raise ValueError("min_wait_seconds must not exceed max_wait_seconds")
        return self


class SettingsIn(Strict):
    stop_on_reply: bool = True
    stop_on_company_reply: bool = False
    ignore_out_of_office: bool = True
    skip_if_enrolled_elsewhere: bool = False
    skip_previously_bounced: bool = True
    skip_previously_replied: bool = False
    verify_mx: bool = False
    allow_free_email_domains: bool = True
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe_link: bool = True
    bounce_rate_threshold: float = Field(default=8.0, gt=0, le=100)
    # Percent of sent emails reported as spam; 0.3 is Gmail's line for bulk senders.
    complaint_rate_threshold: float = Field(default=0.3, ge=0, le=100)
    soft_bounce_limit: int = Field(default=3, ge=1, le=1000)  # soft bounces in a row that suppress an address
    manual_batches: bool = False
    # An evergreen campaign stays active with nothing open, to take enrollments at any time;
    # POST /v1/campaigns/{id}/complete ends it.
    evergreen: bool = False
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
