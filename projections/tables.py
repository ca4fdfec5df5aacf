"""Read-model tables served by the management API. Times are ISO strings from event times."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table, Text, UniqueConstraint

from projections.base import metadata

workspaces = Table(
    "rm_workspaces", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("monthly_limit", Integer),
    Column("require_approval", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
)

api_keys = Table(
    "rm_api_keys", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Not a read model: when each key was last used, written by authentication (at most once a minute
# per key and process) outside the log, since an event per request would swamp it. No projection
# owns it, so a rebuild leaves it as it is.
api_key_usage = Table(
    "api_key_usage", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("last_used_at", String(32), nullable=False),
)

senders = Table(
    "rm_senders", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("from_name", String(255)),
    Column("smtp", Text, nullable=False),
    Column("imap", Text),
    Column("daily_limit", Integer, nullable=False),
    Column("daily_limit_variation_pct", Float, nullable=False),
    Column("bounce_rate_threshold", Float, nullable=False),
    Column("max_connections", Integer, nullable=False),
    Column("warmup", Text),  # JSON {start, increase_per_day, target} or NULL
    Column("dkim", Text),  # JSON {selector, algorithm, public_key, private_key_enc} or NULL
    Column("status", String(16), nullable=False),
    Column("disabled_reason", Text),
    Column("disabled_at", String(32)),
    Column("removed", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

contacts = Table(
    "rm_contacts", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("email", String(320)),
    Column("email_hash", String(64), nullable=False),
    Column("email_domain", String(255), nullable=False),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("company", String(255)),
    Column("timezone", String(64)),
    Column("custom_fields", Text),
    Column("status", String(16), nullable=False),
    Column("bounced", Boolean, nullable=False),
    Column("replied", Boolean, nullable=False),
    Column("unsubscribed", Boolean, nullable=False),
    Column("erased", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Index("ix_rm_contacts_ws_hash", "workspace_id", "email_hash"),
    # GET /v1/contacts' order, ending with the unique id: a cursor page seeks (workspace, not erased,
    # created_at, id) even among the thousands of contacts one import gives the same created_at, and
    # the page's total counts this index alone (no table row read on SQLite).
    Index("ix_rm_contacts_ws_listing", "workspace_id", "erased", "created_at", "id"),
)

lists = Table(
    "rm_lists", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("created_at", String(32), nullable=False),
)

list_members = Table(
    "rm_list_members", metadata,
    Column("list_id", String(64), primary_key=True),
    Column("contact_id", String(64), primary_key=True, index=True),
)

suppressions = Table(
    "rm_suppressions", metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("value_hash", String(64), primary_key=True),
    Column("value", String(320)),
    Column("reason", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    # GET /v1/suppressions' order (the primary key's columns make it unique), for its cursor pages.
    Index("ix_rm_suppressions_ws_created", "workspace_id", "created_at", "value_hash", "kind"),
)

campaigns = Table(
    "rm_campaigns", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("folder", String(255)),
    Column("tags", Text, nullable=False),
    Column("outreach_id", String(255)),
    Column("definition", Text, nullable=False),
    Column("launch_at", String(32)),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("launched_at", String(32)),
    Column("completed_at", String(32)),
    Column("approved_at", String(32)),
    Column("paused_reason", Text),  # why the engine paused it (bounce or complaint guard); NULL otherwise
    Column("deleted", Boolean, nullable=False),
    # GET /v1/campaigns' default order (created_at, then id), for its cursor pages.
    Index("ix_rm_campaigns_ws_listing", "workspace_id", "deleted", "created_at", "id"),
)

enrollments = Table(
    "rm_enrollments", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("current_step", Integer, nullable=False),
    Column("next_send_at", String(32)),
    Column("batch_number", Integer),
    Column("priority", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("sender_id", String(64)),
    Column("stop_reason", String(64)),
    Column("enrolled_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    UniqueConstraint("campaign_id", "contact_id", name="uq_rm_enrollments_campaign_contact"),
    Index("ix_rm_enrollments_campaign_status", "campaign_id", "status"),
    # GET /v1/campaigns/{id}/enrollments' order (seq, then id), for its cursor pages.
    Index("ix_rm_enrollments_campaign_seq", "campaign_id", "seq", "id"),
)

skips = Table(
    "rm_skips", metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), nullable=False, index=True),
    Column("contact_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("at", String(32), nullable=False),
)

webhooks = Table(
    "rm_webhooks", metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("secret_enc", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)
