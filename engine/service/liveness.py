"""Which process holds which claims, and whether it is still alive: fast recovery after a crash.

A claim carries a lease (10 minutes by default): long enough for any SMTP transaction, far too
long to leave a dead worker's claims hanging. So each process that claims registers itself in
``engine_workers`` in the claim's own transaction, with the ids it claimed, and beats a heartbeat
while it sends. Another process that finds the heartbeat older than ``dead_after`` seconds
recovers those claims without waiting for the lease.

What recovery may do depends on how far the dead worker got, which it records before each step:

- claims it had announced as ``sending``: SMTP may have begun for them, so every one without an
  outcome becomes ``email.uncertain`` and is never re-sent: nothing is sent twice;
- claims it was building at that moment (``current``): suspects. Each death while building an
  email counts against it (``engine_suspects``); after ``quarantine_after_deaths`` (3) the email
  is quarantined as a poison message, so that one email that kills every worker cannot stop the
  queue. Until then it goes back to the queue;
- the other claims it held had not been reached: back to the queue (``email.released``, reason
  ``worker_died``).

A suspect is built (and sent) alone, announced first, so that a death names it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Integer, String, Table, Text, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time, parse_time
from projections.base import metadata

workers = Table(
    "engine_workers", metadata,
    Column("id", String(64), primary_key=True),
    Column("heartbeat_at", String(32), nullable=False),
    # JSON {"held": [email ids], "sending": [email ids], "current": [email ids]}, or NULL.
    # (A bare JSON list, written before progress was recorded, reads as all "sending".)
    Column("claims", Text),
)

suspects = Table(
    "engine_suspects", metadata,
    Column("email_id", String(96), primary_key=True),
    Column("deaths", Integer, nullable=False),  # worker deaths while this email was being built
)

QUARANTINE_AFTER_DEATHS = 3


@dataclass(frozen=True, slots=True)
class Orphans:
    """What the dead workers held, sorted by what recovery may do with it."""

    dead_workers: list[str] = field(default_factory=list)
    maybe_sent: list[str] = field(default_factory=list)  # SMTP may have begun: uncertain
    suspects: list[str] = field(default_factory=list)  # being built when the worker died
    untouched: list[str] = field(default_factory=list)  # claimed, not yet built: back to the queue

    @property
    def held(self) -> list[str]:
        return [*self.maybe_sent, *self.suspects, *self.untouched]

HEARTBEAT_SECONDS = 5.0
DEAD_AFTER_SECONDS = 30.0


async def hold(conn: AsyncConnection, worker_id: str, email_ids: Sequence[str], now: datetime,
               building: Sequence[str]) -> None:
    """Record, in the claim's transaction, that `worker_id` holds `email_ids` (and is alive now) and
    is about to build the messages of `building` (the claims not under suspicion) in one go."""
    values = {"heartbeat_at": format_time(now), "claims": _progress(email_ids, (), building)}
    changed = (await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))).rowcount
    if not changed:
        await conn.execute(workers.insert().values(id=worker_id, **values))


async def progress(conn: AsyncConnection, worker_id: str, email_ids: Sequence[str], sending: Sequence[str],
                   current: Sequence[str] = ()) -> None:
    """Record how far the worker got: SMTP may begin for `sending`, `current` is being built.
    Committed before the work it announces, so that a death is judged by what had really started."""
    await conn.execute(update(workers).where(workers.c.id == worker_id).values(
        claims=_progress(email_ids, sending, current)))


def _progress(email_ids: Sequence[str], sending: Sequence[str], current: Sequence[str]) -> str:
    return json.dumps({"held": list(email_ids), "sending": list(sending), "current": list(current)})


async def deaths_of(conn: AsyncConnection, email_ids: Sequence[str]) -> dict[str, int]:
    """Worker deaths so far while each of `email_ids` was being built (absent: none)."""
    if not email_ids:
        return {}
    rows = await conn.execute(select(suspects.c.email_id, suspects.c.deaths).where(
        suspects.c.email_id.in_(list(email_ids))))
    return {email_id: int(deaths) for email_id, deaths in rows.all()}


async def count_deaths(conn: AsyncConnection, deaths: dict[str, int]) -> None:
    """Store each suspect's new count (a quarantined email's row is dropped: it never comes back)."""
    for email_id, count in deaths.items():
        changed = (await conn.execute(update(suspects).where(suspects.c.email_id == email_id).values(
            deaths=count))).rowcount
        if not changed:
            await conn.execute(suspects.insert().values(email_id=email_id, deaths=count))


async def clear_suspects(conn: AsyncConnection, email_ids: Sequence[str]) -> None:
    """These emails got an outcome (or were quarantined): their past deaths no longer matter."""
    if email_ids:
        await conn.execute(delete(suspects).where(suspects.c.email_id.in_(list(email_ids))))


async def beat(conn: AsyncConnection, worker_id: str, now: datetime) -> None:
    await conn.execute(update(workers).where(workers.c.id == worker_id).values(heartbeat_at=format_time(now)))


async def let_go(conn: AsyncConnection, worker_id: str) -> None:
    """Every claim of the tick has its outcome: nothing to recover if this process dies now."""
    await conn.execute(delete(workers).where(workers.c.id == worker_id))


async def orphaned(conn: AsyncConnection, now: datetime, dead_after: float) -> Orphans:
    """The workers whose heartbeat is older than `dead_after` seconds, and their claims by phase."""
    limit = format_time(now - timedelta(seconds=dead_after))
    rows = (await conn.execute(select(workers.c.id, workers.c.claims).where(workers.c.heartbeat_at < limit))).all()
    found = Orphans(dead_workers=[row[0] for row in rows])
    for _, claims in rows:
        if not claims:
            continue
        recorded: Any = json.loads(claims)
        if isinstance(recorded, list):  # before progress was recorded: assume the worst
            found.maybe_sent.extend(recorded)
            continue
        sending, current = set(recorded["sending"]), set(recorded["current"])
        for email_id in recorded["held"]:
            if email_id in sending:
                found.maybe_sent.append(email_id)
            elif email_id in current:
                found.suspects.append(email_id)
            else:
                found.untouched.append(email_id)
    return found


async def forget(conn: AsyncConnection, worker_ids: Sequence[str]) -> None:
    if worker_ids:
        await conn.execute(delete(workers).where(workers.c.id.in_(list(worker_ids))))


async def next_orphan_at(conn: AsyncConnection, dead_after: float) -> datetime | None:
    """When the stalest worker still holding claims will count as dead, if none beats before."""
    oldest = (await conn.execute(select(func.min(workers.c.heartbeat_at)).where(workers.c.claims.is_not(None))
                                 )).scalar()
    return None if oldest is None else parse_time(oldest) + timedelta(seconds=dead_after)
