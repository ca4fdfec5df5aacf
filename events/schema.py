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
# the expected version and extend the hash chain without scanning the events table. Triggers on
# the events table keep it (see below): no writer maintains it by hand.
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

# Idempotency-Key replay (engine/api/idempotency.py reads and writes it): the first response to a
# (workspace, key) is kept and replayed. Created with the log so every node sees a claim at once.
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

# The secret key's check value (``Vault.key_check_value``), recorded when the database is created:
# opening under another key is refused before anything is appended. One row (``id`` = 1); a table
# of its own so that the events table keeps only events and the check never enters the hash chain.
key_check = Table(
    "key_check",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("check_value", String(64), nullable=False),
)

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
    # The database, not only the writer, keeps each stream gap-free: an event must be the next
    # version of its stream's head (a constraint failure, which the store turns into a conflict).
    """CREATE TRIGGER IF NOT EXISTS events_next_version BEFORE INSERT ON events
       WHEN NEW.version <> COALESCE((SELECT version FROM streams WHERE stream = NEW.stream), 0) + 1
       BEGIN SELECT RAISE(ABORT, 'stream version conflict: not the next version of the stream'); END""",
    # ... and moves the head (version, last hash) in the same statement as the insert.
    """CREATE TRIGGER IF NOT EXISTS events_stream_head AFTER INSERT ON events
       BEGIN
         INSERT INTO streams (stream, workspace_id, version, last_hash)
         VALUES (NEW.stream, NEW.workspace_id, NEW.version, NEW.hash)
         ON CONFLICT (stream) DO UPDATE SET version = excluded.version, last_hash = excluded.last_hash;
       END""",
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
    # Once per INSERT statement, over all its rows (a transition table): every stream's new events
    # must continue its head without a gap, and the heads move in one set-based upsert. Each head is
    # read by its own index probe (LATERAL ... LIMIT 1): a plain join was planned as a sequential
    # scan of streams while the table had no statistics yet (a bulk load's first minute).
    """CREATE OR REPLACE FUNCTION events_stream_heads() RETURNS trigger AS $$
       BEGIN
         IF EXISTS (
           SELECT 1 FROM (SELECT stream, min(version) AS lo, max(version) AS hi, count(*) AS n
                          FROM new_events GROUP BY stream) g
           LEFT JOIN LATERAL (SELECT version FROM streams WHERE stream = g.stream LIMIT 1) s ON true
           WHERE g.lo <> COALESCE(s.version, 0) + 1 OR g.hi - g.lo + 1 <> g.n
         ) THEN
           RAISE EXCEPTION 'stream version conflict: not the next version of the stream'
             USING ERRCODE = 'unique_violation';
         END IF;
         INSERT INTO streams (stream, workspace_id, version, last_hash)
         SELECT DISTINCT ON (stream) stream, workspace_id, version, hash FROM new_events
         ORDER BY stream, version DESC
         ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version, last_hash = EXCLUDED.last_hash;
         RETURN NULL;
       END; $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS events_stream_heads ON events",
    """CREATE TRIGGER events_stream_heads AFTER INSERT ON events REFERENCING NEW TABLE AS new_events
       FOR EACH STATEMENT EXECUTE FUNCTION events_stream_heads()""",
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
