"""The senders read model: mailboxes, their limits, status and DKIM selector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections import tables
from projections.base import (
    ReshapingProjection,
    compact_json,
    event_of,
    recorded_at_text,
)

# -- senders ----------------------------------------------------------------------------------
# Version 2: max_connections and warmup; version 3: dkim (the table is reshaped on databases made before).
senders = ReshapingProjection("senders", 3, [tables.senders])


@senders.on("sender.added")
async def _sender_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(tables.senders.insert(), [
        {"id": d.sender_id, "workspace_id": e.workspace_id, "email": d.email, "from_name": d.from_name,
         "smtp": compact_json(d.smtp), "imap": compact_json(d.imap) if d.imap is not None else None,
         "daily_limit": d.daily_limit,
         "daily_limit_variation_pct": d.daily_limit_variation_pct, "bounce_rate_threshold": d.bounce_rate_threshold,
         "max_connections": d.max_connections, "warmup": compact_json(d.warmup) if d.warmup is not None else None,
         "dkim": None, "status": "active", "disabled_reason": None, "disabled_at": None, "removed": False,
         "created_at": recorded_at_text(e), "updated_at": recorded_at_text(e)}
        for e in evs for d in [event_of(e)]])


@senders.on("sender.updated")
async def _sender_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = event_of(e)
        values: dict[str, Any] = {"updated_at": recorded_at_text(e)}
        for key, value in d.changes.items():
            if key in ("smtp", "imap", "warmup"):
                values[key] = compact_json(value) if value is not None else None
            elif key in ("email", "from_name", "daily_limit", "daily_limit_variation_pct", "bounce_rate_threshold",
                         "max_connections"):
                values[key] = value
        await conn.execute(update(tables.senders).where(tables.senders.c.id == d.sender_id).values(**values))


_S = tables.senders


@senders.on("sender.dkim_key_set")
async def _sender_dkim_key_set(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The key as the event carries it: the private part stays encrypted in the read model too."""
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        dkim=bindparam("k"), updated_at=bindparam("u")), [{"i": d.sender_id, "u": recorded_at_text(e),
                                                           "k": compact_json({
            "selector": d.selector, "algorithm": d.algorithm, "public_key": d.public_key,
            "private_key_enc": d.private_key_enc})} for e in evs for d in [event_of(e)]])


@senders.on("sender.disabled")
async def _sender_disabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        status=bindparam("st"), disabled_reason=bindparam("r"), disabled_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": d.sender_id, "st": d.status, "r": d.reason, "at": recorded_at_text(e), "u": recorded_at_text(e)}
         for e in evs for d in [event_of(e)]])


@senders.on("sender.reenabled")
async def _sender_reenabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        status="active", disabled_reason=None, disabled_at=None, updated_at=bindparam("u")),
        [{"i": event_of(e).sender_id, "u": recorded_at_text(e)} for e in evs])


@senders.on("sender.removed")
async def _sender_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(removed=True, updated_at=bindparam("u")),
                       [{"i": event_of(e).sender_id, "u": recorded_at_text(e)} for e in evs])
