"""Webhook delivery state: a checkpoint per webhook and an outbox of unsettled or failed deliveries.

Unlike the read models beside it, these tables are not a projection: they record effects outside
the database (HTTP calls that happened or failed), so they are never cleared by a rebuild and never
derived from events alone. They live in :data:`projections.base.metadata`, so
``Projector.create_schema`` creates them on engine start like every other table.

The delivery loop (``engine.service.webhooks``) keeps two cursors per webhook:

- ``position``: every event at or below it is settled for this webhook (delivered, dead, or of a
  type it does not subscribe to). This is the checkpoint proper; it only moves forward in the same
  transaction that records the outcomes of the HTTP calls behind it.
- ``scanned``: every event at or below it has been looked at; those not settled have a row in
  ``webhook_deliveries`` with status ``held`` or ``retrying``. Keeping a second cursor lets the
  other campaigns' events flow while one campaign waits hours for a retry, without re-reading the
  log from the stuck checkpoint on every pass.

Rows of ``webhook_deliveries``: ``held`` (waiting behind an earlier undelivered event of the same
campaign), ``retrying`` (failed, due again at ``next_attempt_at``), ``delivered`` (kept only when it
needed retries, as the record of its attempts) and ``dead`` (given up after the maximum number of
attempts; the checkpoint moves past it). ``lane`` is the event's campaign id, or ``""`` for events
without one: delivery order is kept within a lane.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from projections.base import metadata

HELD = "held"
RETRYING = "retrying"
DELIVERED = "delivered"
DEAD = "dead"
UNSETTLED = (HELD, RETRYING)

webhook_checkpoints = Table(
    "webhook_checkpoints", metadata,
    Column("webhook_id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("scanned", BigInteger, nullable=False),
    # A pass holds the webhook under a lease so that two workers never deliver it at once.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("webhook_id", String(64), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("lane", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", String(32), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("updated_at", String(32), nullable=False),
    Index("ix_webhook_deliveries_open", "webhook_id", "status", "position"),
)

__all__ = ["DEAD", "DELIVERED", "HELD", "RETRYING", "UNSETTLED", "webhook_checkpoints", "webhook_deliveries"]
