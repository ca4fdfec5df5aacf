"""Response and request shapes of the REST API, for the OpenAPI document only.

The routes answer plain dicts built by the engine; these models *describe* those answers (the
contract fixes their JSON, so nothing is validated or filtered through them at run time). They
allow extra fields, so an answer that gains a field stays conformant, and mark as required only
what every answer carries. Request bodies reuse :mod:`engine.domain.models` where the engine parses
with them; the few bodies the engine checks by hand are described here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.domain.models import ContactIn

TIME = "ISO 8601 UTC time with Z"


def _example(example: dict[str, Any] | list[Any]) -> ConfigDict:
    return ConfigDict(extra="allow", json_schema_extra={"examples": [example]})


class Described(BaseModel):
    """Base of the documentation models: extra fields allowed (answers may grow)."""

    model_config = ConfigDict(extra="allow")


# -- errors -----------------------------------------------------------------------------------
class ErrorBody(Described):
    code: str = Field(description="Stable machine-readable code, e.g. validation_failed, campaign_not_found.")
    message: str = Field(description="Human-readable explanation; may change between versions.")
    details: dict[str, Any] = Field(description="Code-specific details: {errors: [{field, message}]} for "
                                                "validation_failed, {status, action} for invalid_state, "
                                                "{request_id} for internal_error.")


class ErrorEnvelope(Described):
    """Every 4xx and 5xx answer."""

    model_config = _example({"error": {"code": "validation_failed", "message": "validation failed",
                                       "details": {"errors": [{"field": "page",
                                                               "message": "page must be an integer >= 1"}]}}})
    error: ErrorBody


class Pagination(Described):
    page: int = Field(ge=1, description="The page answered (1-based).")
    per_page: int = Field(ge=1, description="Items per page (at most 200).")
    total: int = Field(ge=0, description="Items across all pages.")
    has_more: bool = Field(description="Whether a later page exists.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page (null on the last page). A cursor page is an "
        "index seek, as fast at any depth, where `page=N` walks the N-1 pages before it; switch to cursors at any "
        "page. Opaque and signed: a cursor altered, or used with other filters, sort or order, another listing "
        "or another workspace, is 422 validation_failed naming `cursor`.")


class CursorPagination(Described):
    """The cursor of a listing paged by log position (`after`), whose own fields stay beside it."""

    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page (null on the last page); the same keyset "
        "as `after`=`next_after`, signed and bound to the listing's filters and workspace.")
    has_more: bool = Field(default=False, description="Whether a later page exists now.")


# -- workspace, api keys ----------------------------------------------------------------------
class Account(Described):
    model_config = _example({"id": "ws_019b8d2b8c00beb3b9a7f8253ff9", "name": "acme", "monthly_limit": 10000,
                             "sent_this_month": 42, "require_approval": False})
    id: str = Field(description="Workspace id (ws_...).")
    name: str = Field(description="Workspace name.")
    monthly_limit: int | None = Field(description="Emails the workspace may send per calendar month.")
    sent_this_month: int = Field(description="Emails sent since the start of the month (UTC).")
    require_approval: bool = Field(description="Whether a campaign must be approved before launch.")


class ApiKey(Described):
    model_config = _example({"id": "key_019b8d2b8c00beb3ba5fd7323271", "name": "ci", "prefix": "ce_5wFT_",
                             "created_at": "2026-01-05T08:00:00.000000Z", "last_used_at": None})
    id: str = Field(description="Key id (key_...).")
    name: str = Field(description="A label to recognise the key by.")
    prefix: str = Field(description="The key's first 8 characters.")
    created_at: str = Field(description=TIME)
    last_used_at: str | None = Field(description=f"Last authenticated request ({TIME}), or null.")


class ApiKeyCreated(ApiKey):
    model_config = _example({"id": "key_019b8d2b8c00beb3c213092b967d", "name": "ci",
                             "key": "ce_43dlLZWV0Mdv3kMP0KWjzVn_0dUBhMeDFPbr0n52Dco", "prefix": "ce_43dlL",
                             "created_at": "2026-01-05T08:00:00.000000Z", "last_used_at": None})
    key: str | None = Field(description="The secret key, shown in this answer only (null on an idempotent replay).")


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ci"}]})
    name: str = Field(min_length=1, max_length=255, description="A label for the key.")


class Revoked(Described):
    id: str = Field(description="The revoked key's id.")
    revoked: bool = Field(description="Always true.")


class Deleted(Described):
    model_config = _example({"id": "cmp_019b8d2b8c00beb3c0467014648f", "deleted": True})
    id: str = Field(description="The deleted object's id.")
    deleted: bool = Field(description="Always true.")


# -- senders ----------------------------------------------------------------------------------
class SmtpOut(Described):
    host: str = Field(description="SMTP server host.")
    port: int = Field(description="SMTP server port.")
    username: str | None = Field(default=None, description="Login, if any.")
    security: str = Field(description="starttls, tls or none.")
    has_password: bool = Field(default=False, description="Whether a password is stored (never returned).")


class ImapOut(Described):
    host: str = Field(description="IMAP server host.")
    port: int = Field(description="IMAP server port.")
    username: str | None = Field(default=None, description="Login.")
    security: str = Field(description="tls, starttls or none.")
    folder: str = Field(default="INBOX", description="Folder polled for replies and bounces.")
    has_password: bool = Field(default=False, description="Whether a password is stored (never returned).")


class SenderDkim(Described):
    model_config = _example({"selector": "ce20260105", "algorithm": "rsa-sha256", "public_key": "MIIBIjANBgkqh..."})
    selector: str = Field(description="The DKIM selector (s=): the key's record is <selector>._domainkey.<domain>.")
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = Field(description="The signature algorithm (a=).")
    public_key: str = Field(description="The p= value of the TXT record (base64). The private key never leaves.")


class Sender(Described):
    model_config = _example({
        "id": "snd_019b8d2b8c00beb3bb1e607fb7b9", "email": "sales@acme.io", "from_name": "Ana from Acme",
        "smtp": {"host": "smtp.acme.io", "port": 587, "username": "sales", "security": "starttls",
                 "has_password": True},
        "imap": None, "daily_limit": 50, "daily_limit_variation_pct": 0.0, "bounce_rate_threshold": 8.0,
        "status": "active", "disabled_reason": None, "disabled_at": None, "sent_today": 0, "bounce_rate": 0.0,
        "created_at": "2026-01-05T08:00:00.000000Z"})
    id: str = Field(description="Sender id (snd_...).")
    email: str = Field(description="From address.")
    from_name: str | None = Field(default=None, description="Display name.")
    smtp: SmtpOut
    imap: ImapOut | None = Field(default=None, description="Mailbox polled for replies and bounces, or null.")
    daily_limit: int = Field(description="Emails per day across all campaigns.")
    daily_limit_variation_pct: float = Field(description="Daily limit varied by up to this percentage.")
    bounce_rate_threshold: float = Field(description="Bounce rate (percent) that disables the sender.")
    status: Literal["active", "disabled", "disconnected"] = Field(description="Whether it sends.")
    disabled_reason: str | None = Field(default=None, description="Why it was disabled, or null.")
    disabled_at: str | None = Field(default=None, description=f"When it was disabled ({TIME}), or null.")
    sent_today: int = Field(description="Emails sent today (UTC).")
    bounce_rate: float = Field(description="Bounce rate in percent.")
    created_at: str = Field(description=TIME)
    max_connections: int = Field(description="Concurrent SMTP connections the engine opens to this sender's server.")
    warmup: dict[str, int] | None = Field(
        default=None, description="Warm-up: {start, increase_per_day, target} from the first send day, or null.")
    daily_limit_today: int | None = Field(
        description="What the sender may send today (UTC): daily_limit, less its variation, lowered by a warm-up.")
    dkim: SenderDkim | None = Field(default=None, description="The sender's DKIM key (public half), or null.")


class DkimKeyIn(Described):
    """``POST /v1/senders/{id}/dkim``: every field optional; an empty body generates an RSA 2048 key."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"algorithm": "ed25519-sha256"}]})
    selector: str | None = Field(default=None, description="DNS label(s); default ce<YYYYMMDD>.")
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] | None = Field(
        default=None, description="Default rsa-sha256, or the imported key's.")
    private_key_pem: str | None = Field(
        default=None, description="Import this unencrypted PEM private key (RSA 1024-4096 bits or Ed25519) "
                                  "instead of generating one; stored encrypted, never returned.")


class DnsRecord(Described):
    name: str = Field(description="The DNS name to publish at.")
    type: Literal["TXT"] = Field(description="Record type.")
    value: str = Field(description="The TXT value (a provider splits a long one into 255-byte strings).")


class SenderDns(Described):
    model_config = _example({
        "domain": "acme.io",
        "dkim": {"name": "ce20260105._domainkey.acme.io", "type": "TXT", "value": "v=DKIM1; k=rsa; p=MIIB..."},
        "spf": {"name": "acme.io", "type": "TXT", "value": "v=spf1 a mx a:smtp.acme.io ~all"},
        "dmarc": {"name": "_dmarc.acme.io", "type": "TXT", "value": "v=DMARC1; p=none; rua=mailto:postmaster@acme.io"},
        "warnings": []})
    domain: str = Field(description="The sender's domain (IDN as an A-label).")
    dkim: DnsRecord | None = Field(description="The DKIM key record, or null while the sender has no key.")
    spf: DnsRecord = Field(description="A recommended SPF record: the domain's hosts and the sender's SMTP server.")
    dmarc: DnsRecord = Field(description="A recommended DMARC record: p=none (monitoring) with aggregate reports.")
    warnings: list[str] = Field(description="What keeps receivers from trusting the mail (no key, public_url not "
                                            "https, ...).")


class SenderPage(Described):
    data: list[Sender]
    pagination: Pagination


class SenderCheck(Described):
    model_config = _example({"smtp_ok": True, "imap_ok": None, "error": None})
    smtp_ok: bool = Field(description="Whether the SMTP login succeeded.")
    imap_ok: bool | None = Field(description="Whether the IMAP login succeeded (null without IMAP).")
    error: str | None = Field(description="What failed, or null.")


# -- contacts, lists, suppressions ------------------------------------------------------------
class Contact(Described):
    model_config = _example({
        "id": "con_019b8d2b8c00beb3bc6f55db1878", "email": "bob@example.com", "first_name": "Bob",
        "last_name": None, "company": "Example Ltd", "timezone": "Europe/Paris", "custom_fields": {"plan": "pro"},
        "status": "active", "unsubscribed": False, "bounced": False, "replied": False,
        "created_at": "2026-01-05T08:00:00.000000Z", "updated_at": "2026-01-05T08:00:00.000000Z"})
    id: str = Field(description="Contact id (con_...).")
    email: str | None = Field(description="Address (null once erased).")
    first_name: str | None = Field(default=None, description="First name.")
    last_name: str | None = Field(default=None, description="Last name.")
    company: str | None = Field(default=None, description="Company.")
    timezone: str | None = Field(default=None, description="IANA time zone, for use_contact_timezone.")
    custom_fields: dict[str, Any] | None = Field(default=None, description="Merge fields: {{custom.KEY}}.")
    status: str = Field(description="active, unsubscribed, bounced, ...")
    created_at: str = Field(description=TIME)


class ContactPage(Described):
    data: list[Contact]
    pagination: Pagination


class ImportRow(Described):
    row: int = Field(description="1-based row (CSV: data row after the header).")
    error: str = Field(description="Why the row was refused.")


class ImportResult(Described):
    model_config = _example({"created": 120, "updated": 3, "invalid": [{"row": 7, "error": "email: invalid"}]})
    created: int = Field(description="New contacts.")
    updated: int = Field(description="Existing contacts updated.")
    invalid: list[ImportRow] = Field(description="Refused rows; the other rows are imported anyway.")
    list_id: str | None = Field(default=None, description="With ?list_id=: the list the contacts joined.")
    added_to_list: int | None = Field(default=None, description="With ?list_id=: contacts of valid rows added "
                                      "to the list (created, updated or unchanged; already members count too).")


class ContactList(Described):
    model_config = _example({"id": "lst_019b8d2b8c00beb3be9058d087ae", "name": "Leads",
                             "created_at": "2026-01-05T08:00:00.000000Z", "contact_count": 0})
    id: str = Field(description="List id (lst_...).")
    name: str = Field(description="List name.")
    created_at: str = Field(description=TIME)
    contact_count: int = Field(default=0, description="Members.")


class ListPage(Described):
    data: list[ContactList]
    pagination: Pagination


class ListMembersChanged(Described):
    model_config = _example({"list_id": "lst_019b8d2b8c00beb3be9058d087ae", "added": 1})
    list_id: str = Field(description="The list.")
    added: int | None = Field(default=None, description="Contacts added (POST).")
    removed: int | None = Field(default=None, description="Contacts removed (DELETE).")


class Suppression(Described):
    model_config = _example({"kind": "domain", "value": "example.org", "reason": "manual",
                             "created_at": "2026-01-05T08:00:00.000000Z"})
    kind: Literal["email", "domain"] = Field(description="What is suppressed.")
    value: str = Field(description="The address or domain.")
    reason: str | None = Field(default=None, description="manual, unsubscribed, bounced, complained, ...")


class SuppressionPage(Described):
    data: list[Suppression]
    pagination: Pagination


class SuppressionDeleted(Described):
    value: str = Field(description="The address or domain no longer suppressed.")
    deleted: bool = Field(description="Always true.")


# -- webhooks, events -------------------------------------------------------------------------
class Webhook(Described):
    model_config = _example({"id": "whk_019b8d2b8c00beb3bf6c2bd54a33", "url": "https://hooks.example.com/ce",
                             "events": ["email.sent", "email.replied"], "created_at": "2026-01-05T08:00:00.000000Z"})
    id: str = Field(description="Webhook id (whk_...).")
    url: str = Field(description="Where deliveries are POSTed.")
    events: list[str] = Field(description="Event types delivered.")
    created_at: str = Field(description=TIME)
    secret: str | None = Field(default=None, description="HMAC secret for X-Signature (in the create answer only).")


class WebhookPage(Described):
    data: list[Webhook]
    pagination: Pagination


class StoredEvent(Described):
    position: int = Field(description="Position in the log; pass the last one as `after`.")
    stream: str = Field(description="Stream, e.g. campaign-cmp_...")
    version: int = Field(description="Version within the stream.")
    type: str = Field(description="Event type, e.g. email.sent.")
    data: dict[str, Any] = Field(description="The event's fields (personal data of erased contacts removed).")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Who and why: actor (api_key:<id>, cli, system:runtime, system:inbound, "
        "system:tracking, embedded), request_id (the API call's X-Request-Id) and route.")
    recorded_at: str = Field(description=TIME)


class EventPage(Described):
    model_config = _example({"data": [{"position": 1, "stream": "workspace-ws_019b8d2b8c00beb3b9a7f8253ff9",
                                       "version": 1, "type": "workspace.created",
                                       "data": {"name": "acme"}, "recorded_at": "2026-01-05T08:00:00.000000Z"}],
                             "next_after": 1, "pagination": {"next_cursor": None, "has_more": False}})
    data: list[StoredEvent]
    next_after: int = Field(description="Pass as `after` for the next page.")
    pagination: CursorPagination = Field(default_factory=CursorPagination)


# -- campaigns --------------------------------------------------------------------------------
class Campaign(Described):
    """A campaign as stored: the create body with its defaults, plus status, times and stats."""

    model_config = _example({
        "id": "cmp_019b8d2b8c00beb3c0467014648f", "name": "Q2 launch", "description": "", "emoji": "🚀",
        "folder": "Outbound", "tags": ["q2"], "goal": "lead_gen", "outreach_id": None,
        "sender_ids": ["snd_019b8d2b8c00beb3bb1e607fb7b9"],
        "schedule": {"timezone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"],
                     "start_time": "09:00", "end_time": "17:00", "every_minutes": None, "cron": None,
                     "min_wait_seconds": 120, "max_wait_seconds": 420, "max_per_hour": None, "daily_limit": None,
                     "launch_at": None, "use_contact_timezone": False},
        "settings": {"stop_on_reply": True, "track_opens": False, "unsubscribe_link": True},
        "steps": [{"subject": "Hi {{first_name|there}}", "body_html": "<p>...</p>", "body_text": None,
                   "delay": {"days": 0, "hours": 0, "minutes": 0, "business_days": False}, "same_thread": True}],
        "workflow": None, "status": "draft", "created_at": "2026-01-05T08:00:00.000000Z",
        "updated_at": "2026-01-05T08:00:00.000000Z", "launched_at": None, "completed_at": None,
        "approved_at": None})
    id: str = Field(description="Campaign id (cmp_...).")
    name: str = Field(description="Campaign name.")
    status: Literal["draft", "scheduled", "active", "paused", "completed", "cancelled", "archived"] = Field(
        description="Lifecycle status.")
    sender_ids: list[str] = Field(description="Senders rotated through.")
    schedule: dict[str, Any] = Field(description="The send window and pacing (see CampaignIn.schedule).")
    settings: dict[str, Any] = Field(description=(
        "Stop rules, skip rules, tracking, `evergreen` and `auto_enroll` (`{list_ids, filter}` or null: while "
        "active, contacts entering that selection are enrolled; see CampaignIn.settings)."))
    steps: list[dict[str, Any]] = Field(description="The emails, in order.")
    created_at: str = Field(description=TIME)
    updated_at: str = Field(description=TIME)
    launched_at: str | None = Field(default=None, description=f"{TIME}, or null.")
    stats: dict[str, Any] | None = Field(default=None, description="As GET /v1/campaigns/{id}/stats.")


class CampaignPage(Described):
    data: list[Campaign]
    pagination: Pagination


class BulkDeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["cmp_019b8d2b8c00"]}]})
    ids: list[str] = Field(min_length=1, max_length=1000, description="Campaign ids to delete.")


class BulkDeleted(Described):
    model_config = _example({"deleted": ["cmp_019b8d2b8c00beb3c0467014648f"], "not_found": ["cmp_x"]})
    deleted: list[str] = Field(description="Ids deleted.")
    not_found: list[str] = Field(description="Ids unknown to this workspace.")


class EnrollResult(Described):
    model_config = _example({"added": 95, "skipped": {"suppressed": 3, "already_enrolled": 2}, "errors": []})
    added: int = Field(description="Contacts enrolled.")
    skipped: dict[str, int] = Field(description="Contacts not enrolled, by reason (already_enrolled, suppressed...).")
    errors: list[Any] = Field(description="Ids that could not be enrolled (unknown contact or list).")


class Enrollment(Described):
    model_config = _example({"id": "enr_019b8d2b8c00beb3c17ccec08661", "contact_id": "con_019b8d2b8c00beb3bc6f55db1878",
                             "email": "bob@example.com", "status": "pending", "current_step": 0,
                             "next_send_at": "2026-01-05T08:00:00.000000Z", "batch_number": None,
                             "enrolled_at": "2026-01-05T08:00:00.000000Z"})
    id: str = Field(description="Enrollment id (enr_...).")
    contact_id: str = Field(description="The contact.")
    email: str | None = Field(default=None, description="The contact's address (null once erased).")
    status: str = Field(description="pending, in_progress, completed, replied, bounced, unsubscribed, stopped, "
                                    "skipped or failed.")
    current_step: int = Field(description="Steps sent so far.")
    next_send_at: str | None = Field(default=None, description=f"Next email's due time ({TIME}), or null.")
    batch_number: int | None = Field(default=None, description="Manual batch, or null.")
    enrolled_at: str = Field(description=TIME)


class EnrollmentPage(Described):
    data: list[Enrollment]
    pagination: Pagination


class Removed(Described):
    model_config = _example({"removed": 2})
    removed: int = Field(description="Enrollments stopped.")


class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"batch_number": 2}]})
    batch_number: int | None = Field(default=None, ge=1, le=2**63 - 1,
                                     description="The batch to release; the next one when omitted.")


class Dispatched(Described):
    model_config = _example({"batch_number": 2, "released": 50})
    batch_number: int = Field(description="The batch released.")
    released: int = Field(description="Enrollments released, due from now.")


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"emails": ["me@acme.io"]}]})
    emails: list[str] = Field(min_length=1, max_length=20, description="Addresses to send every step to.")
    contact_id: str | None = Field(default=None, description="Merge with this contact's fields (a sample otherwise).")


class TestSendResult(Described):
    model_config = _example({"sent": {"me@acme.io": [{"step": 1, "outcome": "sent", "code": 250,
                                                      "message_id": "<test-c4bce217ef6ef87e.1@acme.io>"}]}})
    sent: dict[str, list[dict[str, Any]]] = Field(description="Per address, each step's SMTP outcome.")


class PreviewStep(Described):
    step: int = Field(description="1-based step.")
    subject: str = Field(description="Rendered subject.")
    body_html: str = Field(description="Rendered HTML body.")
    body_text: str | None = Field(default=None, description="Rendered text body.")


class Preview(Described):
    model_config = _example({"steps": [{"step": 1, "subject": "Hi Alex", "body_html": "<p>...</p>",
                                        "body_text": "..."}]})
    steps: list[PreviewStep]


class ForecastDay(Described):
    date: str = Field(description="Local calendar day (YYYY-MM-DD).")
    count: int = Field(description="Emails that day.")
    by_step: dict[str, int] = Field(description="Per step number.")
    by_sender: dict[str, int] = Field(description="Per sender id.")
    by_variant: dict[str, dict[str, int]] | None = Field(
        default=None, description="Per step number with A/B variants, per variant id: the variant each email "
        "will use (the seeded draw, or the step's winner once decided, as the tick does). Campaign forecasts only.")


class Forecast(Described):
    model_config = _example({"timezone": "UTC", "days": [{"date": "2026-01-05", "count": 3, "by_step": {"1": 3},
                                                          "by_sender": {"snd_019b8d2b8c00beb3bb1e607fb7b9": 3},
                                                          "by_variant": {"1": {"A": 1, "B": 2}}}],
                             "total": 3})
    timezone: str = Field(description="Time zone of the days.")
    days: list[ForecastDay]
    total: int = Field(description="Emails over the horizon.")
    estimated_completion: str | None = Field(
        default=None, description="Local day of the campaign's last queued email, or null past the horizon "
                                  "(campaign forecasts only).")
    what_if: dict[str, Any] | None = Field(
        default=None, description="The what-if parameters applied (nothing stored), when any were given.")


# -- reports ----------------------------------------------------------------------------------
class CampaignStats(Described):
    model_config = _example({"contacts": {"total": 1, "pending": 1}, "emails": {"scheduled": 1, "sent": 0},
                             "engagement": {"opened": 0}, "rates": {"open_rate": 0.0}, "skipped": {},
                             "senders": []})
    contacts: dict[str, int] = Field(description="Enrollments by status, plus total and contacted.")
    emails: dict[str, Any] = Field(description="Emails by state (scheduled, sent, bounced, ...).")
    engagement: dict[str, int] = Field(description="Unique opened, clicked, replied, unsubscribed, out_of_office.")
    rates: dict[str, float] = Field(description="Percentages over sent.")
    skipped: dict[str, int] = Field(description="Contacts not enrolled, by reason.")
    senders: list[dict[str, Any]] = Field(description="Per sender: sent, bounced, bounce_rate, status.")


class StepStats(Described):
    step: int = Field(description="1-based step.")
    subject: str | None = Field(default=None, description="The step's subject template.")
    sent: int = Field(description="Emails sent.")
    node_id: str | None = Field(default=None, description="The workflow's email node the step came from, if any.")
    variants: list[dict[str, Any]] = Field(
        default_factory=list, description="Per A/B variant: {variant, sent, opened, clicked, replied, bounced, "
        "open_rate, click_rate, reply_rate, winner}; empty for a step without variants.")


class TimelineBucket(Described):
    start: str = Field(description="Bucket start, in the campaign's time zone.")
    sent: int = Field(description="Emails sent in the bucket.")


class ActivityItem(Described):
    id: int = Field(description="Log position of the event.")
    type: str = Field(description="Event type.")
    contact_id: str | None = Field(default=None, description="The contact, if any.")
    email: str | None = Field(default=None, description="The contact's address (null once erased).")
    step: int | None = Field(default=None, description="1-based step, if any.")
    at: str = Field(description=TIME)
    enrollment_id: str | None = Field(default=None, description="The enrollment, if any.")
    node_id: str | None = Field(default=None, description="The workflow's email node the step came from, if any.")
    variant: str | None = Field(
        default=None, description="The A/B variant of the event's email (for opens, clicks and replies too: the "
        "one sent); null for a step without variants and for enrollment events.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Type-specific fields.")


class ActivityPage(Described):
    model_config = _example({"data": [{"id": 15, "type": "email.scheduled",
                                       "contact_id": "con_019b8d2b8c00beb3bc6f55db1878", "email": "bob@example.com",
                                       "step": 1, "at": "2026-01-05T08:00:00.000000Z",
                                       "enrollment_id": "enr_019b8d2b8c00beb3c17ccec08661", "node_id": None,
                                       "variant": "A", "metadata": {}}],
                             "next_after": 15, "has_more": False,
                             "pagination": {"next_cursor": None, "has_more": False}})
    data: list[ActivityItem]
    next_after: int = Field(description="Pass as `after` for the next page.")
    has_more: bool = Field(default=False, description="Whether a later page exists now.")
    pagination: CursorPagination = Field(default_factory=CursorPagination)


class Skip(Described):
    contact_id: str | None = Field(default=None, description="The contact.")
    email: str | None = Field(default=None, description="Its address (null once erased).")
    kind: str = Field(description="Skip reason.")
    at: str = Field(description=TIME)


class Reply(Described):
    contact_id: str | None = Field(default=None, description="The contact.")
    email: str | None = Field(default=None, description="Its address (null once erased).")
    step: int | None = Field(default=None, description="Step replied to.")
    replied_at: str = Field(description=TIME)
    hours_to_reply: float | None = Field(default=None, description="Hours from the send to the reply.")
    out_of_office: bool = Field(default=False, description="Whether it was an automatic reply.")


class LinkStats(Described):
    url: str = Field(description="The tracked link.")
    clicks: int = Field(description="Clicks.")
    unique_clicks: int = Field(description="Emails with at least one click.")


# -- operations -------------------------------------------------------------------------------
class Health(Described):
    model_config = _example({"status": "ok"})
    status: str = Field(description="Always ok.")


class Readiness(Described):
    model_config = _example({"database": "ok", "runtime": "ticking", "lag_seconds": 0.0})
    database: Literal["ok", "unavailable"] = Field(description="Whether SELECT 1 answered in time.")
    runtime: str = Field(description="ticking, lagging, failing or not_running.")
    lag_seconds: float | None = Field(description="How far the runtime loop is behind (null without a loop).")


IMPORT_ROWS = list[ContactIn]
