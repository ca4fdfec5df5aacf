"""The log's tables, and the triggers that make the events table append-only on both backends."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = MetaData()

events = Table(
    "events",
    metadata,
    # On SQLite an INTEGER PRIMARY KEY is the rowid itself: one b-tree fewer per event.
    Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("stream", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("type_version", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream", "version", name="uq_events_stream_version"),
    Index("ix_events_workspace_position", "workspace_id", "position"),
)

# One row per stream: its current version and the hash of its last event. It lets an append check
# the expected version and extend the hash chain without scanning the events table.
streams = Table(
    "streams",
    metadata,
    Column("stream", String(128), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

# Per-subject data keys (wrapped under the secret key). Erasure deletes the row: crypto-shredding.
vault_keys = Table(
    "vault_keys",
    metadata,
    Column("subject_id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
)

# Idempotency-Key replay: the first response to a (workspace, key) is kept and replayed.
idempotency = Table(
    "idempotency_keys",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
]

_PG_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'events are append-only: % refused', TG_OP; END; $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS events_no_update_delete ON events",
    """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION events_append_only()""",
    "DROP TRIGGER IF EXISTS events_no_truncate ON events",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()""",
]


SCHEMA_LOCK = 7_401_226_001  # pg_advisory_xact_lock key: nodes starting together create the schema in turn


async def create_log_schema(conn: AsyncConnection) -> None:
    """Create the log's tables and append-only triggers if missing.

    On PostgreSQL, under a transaction-level advisory lock: workers started at the same moment
    otherwise race on ``CREATE OR REPLACE FUNCTION`` ("tuple concurrently updated") or on
    ``CREATE TABLE`` and one of them dies at start-up.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
    await conn.run_sync(metadata.create_all)
    statements = _PG_TRIGGERS if conn.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for sql in statements:
        await conn.exec_driver_sql(sql)
