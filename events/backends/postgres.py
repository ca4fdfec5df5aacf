"""The event store on PostgreSQL through asyncpg.

The log's write lock is ``LOCK TABLE events IN EXCLUSIVE MODE``, taken at the start of every write
transaction: readers go on reading, and positions are assigned and committed one writer at a time.
An append's rows go in as one ``INSERT ... SELECT FROM unnest(arrays)`` (one statement and one
firing of the statement-level stream-heads trigger however many rows). At commit, ``NOTIFY`` tells
the other nodes listening on the store's channel that new work exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from events.backends.base import COLUMNS, SqlEventStore, StreamHeads, take_heads
from events.store import StoredEvent
from events.vault import Vault

INSERT = (f"INSERT INTO events ({COLUMNS}) SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], "
          "$4::text[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])")
# Each name looked up by its own index probe (a LATERAL subquery with LIMIT is not flattened into a
# join): on a table not yet analyzed (a bulk load's first minute, before autovacuum), the planner
# answered ``= ANY(array)`` with a sequential scan, which grew with the table on every append.
WRAPPED_KEYS = ("SELECT k.subject_id, k.wrapped_key FROM unnest($1::text[]) AS u(subject_id) CROSS JOIN LATERAL "
                "(SELECT subject_id, wrapped_key FROM vault_keys WHERE subject_id = u.subject_id LIMIT 1) AS k")
INSERT_KEYS = ("INSERT INTO vault_keys (subject_id, workspace_id, wrapped_key) "
               "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])")
HEADS_AND_TOP = ("SELECT s.stream, s.version, s.last_hash FROM unnest($1::text[]) AS u(stream) CROSS JOIN LATERAL "
                 "(SELECT stream, version, last_hash FROM streams WHERE stream = u.stream LIMIT 1) AS s "
                 "UNION ALL SELECT NULL, COALESCE(MAX(position), 0), NULL FROM events")


class PostgresEventStore(SqlEventStore):
    """The log in PostgreSQL: one pool for writes and reads, the table lock as the write lock."""

    @classmethod
    async def open(cls, url: str, vault: Vault, now: Callable[[], datetime], *,
                   create: bool = True) -> PostgresEventStore:
        # Custom plans: a generic plan cached while the streams table was tiny would scan it whole
        # for every IN-list look-up once it has grown.
        engine = create_async_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True,
                                     connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
        store: PostgresEventStore = await cls._opened(url, vault, now, engine, engine, create=create)
        return store

    async def _lock_log(self, conn: AsyncConnection) -> None:
        await conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")

    async def _before_commit(self, conn: AsyncConnection, pending: Sequence[StoredEvent]) -> None:
        """NOTIFY the store's channel (delivered at commit) when the appended events create work."""
        if self.notify_channel and self.notify_when and self.notify_when(pending):
            await conn.exec_driver_sql(f"NOTIFY {self.notify_channel}")

    async def _insert_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """One ``INSERT ... SELECT FROM unnest`` of one array per column, instead of one execution per row."""
        columns = tuple(map(list, zip(*rows, strict=True)))
        await conn.exec_driver_sql(INSERT, columns)

    async def _wrapped_keys(self, conn: AsyncConnection, subjects: Sequence[str]) -> list[tuple[str, bytes]]:
        """The key rows in one query, the subjects as one array parameter."""
        found: Any = await conn.exec_driver_sql(WRAPPED_KEYS, (list(subjects),))
        return [(subject_id, bytes(wrapped)) for subject_id, wrapped in found]

    async def _insert_keys(self, conn: AsyncConnection, rows: list[tuple[str, str, bytes]]) -> None:
        """One ``INSERT ... SELECT FROM unnest``, like the events' rows."""
        await conn.exec_driver_sql(INSERT_KEYS, tuple(map(list, zip(*rows, strict=True))))

    async def _heads_and_top(self, conn: AsyncConnection, names: Sequence[str]) -> tuple[StreamHeads, int]:
        heads: StreamHeads = {}
        found: Any = await conn.exec_driver_sql(HEADS_AND_TOP, (list(names),))
        return heads, take_heads(found, heads) or 0
