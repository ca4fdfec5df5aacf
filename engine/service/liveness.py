"""Which process holds which claims, and whether it is still alive: fast recovery after a crash.

A claim carries a lease (10 minutes by default): long enough for any SMTP transaction, far too
long to leave a dead worker's claims hanging. So each process that claims registers itself in
``engine_workers`` in the claim's own transaction, with the ids it claimed, and beats a heartbeat
while it sends. Another process that finds the heartbeat older than ``dead_after`` seconds
treats those claims as expired (uncertain, never re-sent), as it would after the lease.

The table is operational state, not a read model: it lives outside the log and no rebuild touches
it. Times are the engine clock's, as everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Column, String, Table, Text, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time, parse_time
from projections.base import metadata

workers = Table(
    "engine_workers", metadata,
    Column("id", String(64), primary_key=True),
    Column("heartbeat_at", String(32), nullable=False),
    Column("claims", Text),  # JSON list of the email ids it holds claimed, or NULL
)

HEARTBEAT_SECONDS = 5.0
DEAD_AFTER_SECONDS = 30.0


async def hold(conn: AsyncConnection, worker_id: str, email_ids: Sequence[str], now: datetime) -> None:
    """Record, in the claim's transaction, that `worker_id` holds `email_ids` (and is alive now)."""
    values = {"heartbeat_at": format_time(now), "claims": json.dumps(list(email_ids))}
    changed = (await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))).rowcount
    if not changed:
        await conn.execute(workers.insert().values(id=worker_id, **values))


async def beat(conn: AsyncConnection, worker_id: str, now: datetime) -> None:
    await conn.execute(update(workers).where(workers.c.id == worker_id).values(heartbeat_at=format_time(now)))


async def let_go(conn: AsyncConnection, worker_id: str) -> None:
    """Every claim of the tick has its outcome: nothing to recover if this process dies now."""
    await conn.execute(delete(workers).where(workers.c.id == worker_id))


async def orphaned(conn: AsyncConnection, now: datetime, dead_after: float) -> tuple[list[str], list[str]]:
    """(dead workers, the email ids they held): heartbeats older than `dead_after` seconds."""
    limit = format_time(now - timedelta(seconds=dead_after))
    rows = (await conn.execute(select(workers.c.id, workers.c.claims).where(workers.c.heartbeat_at < limit))).all()
    held = [email_id for _, claims in rows if claims for email_id in json.loads(claims)]
    return [row[0] for row in rows], held


async def forget(conn: AsyncConnection, worker_ids: Sequence[str]) -> None:
    if worker_ids:
        await conn.execute(delete(workers).where(workers.c.id.in_(list(worker_ids))))


async def next_orphan_at(conn: AsyncConnection, dead_after: float) -> datetime | None:
    """When the stalest worker still holding claims will count as dead, if none beats before."""
    oldest = (await conn.execute(select(func.min(workers.c.heartbeat_at)).where(workers.c.claims.is_not(None))
                                 )).scalar()
    return None if oldest is None else parse_time(oldest) + timedelta(seconds=dead_after)
