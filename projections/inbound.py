"""Operational state of mailbox polling: IMAP checkpoints and the inbound messages already handled.

These are not projections (a rebuild does not clear them): they record what was read from the
outside world, and are written in the same transaction as the events that reading produced, so a
crash never loses a message nor counts one twice.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from projections.base import metadata

mailbox_checkpoints = Table(
    "mailbox_checkpoints", metadata,
    Column("sender_id", String(64), primary_key=True),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("last_uid", BigInteger, nullable=False),
)

inbound_seen = Table(
    "inbound_seen", metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("message_key", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("received_at", String(32), nullable=False),
)
