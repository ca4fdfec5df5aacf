"""The workspaces read model: workspaces, their API keys and webhooks."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections import tables
from projections.base import (
    ReshapingProjection,
    compact_json,
    event_of,
    recorded_at_text,
)

# Version 2: API keys carry a name.
workspaces = ReshapingProjection("workspaces", 2, [tables.workspaces, tables.api_keys, tables.webhooks])


@workspaces.on("workspace.created")
async def _ws_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(tables.workspaces.insert(), [
        {"id": event_of(e).workspace_id, "name": event_of(e).name, "monthly_limit": event_of(e).monthly_limit,
         "require_approval": event_of(e).require_approval, "created_at": recorded_at_text(e)} for e in evs])


@workspaces.on("api_key.created")
async def _key_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(tables.api_keys.insert(), [
        {"key_id": event_of(e).key_id, "workspace_id": event_of(e).workspace_id, "key_hash": event_of(e).key_hash,
         "prefix": event_of(e).prefix, "name": event_of(e).name, "revoked": False,
         "created_at": recorded_at_text(e)} for e in evs])


@workspaces.on("api_key.revoked")
async def _key_revoked(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(tables.api_keys).where(tables.api_keys.c.key_id == bindparam("k")).values(revoked=True),
                       [{"k": event_of(e).key_id} for e in evs])


@workspaces.on("webhook.created")
async def _wh_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(tables.webhooks.insert(), [
        {"id": event_of(e).webhook_id, "workspace_id": e.workspace_id, "url": event_of(e).url,
         "event_types": compact_json(list(event_of(e).event_types)), "secret_enc": event_of(e).secret_enc,
         "created_at": recorded_at_text(e)}
        for e in evs])


@workspaces.on("webhook.deleted")
async def _wh_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(delete(tables.webhooks).where(tables.webhooks.c.id == bindparam("i")),
                       [{"i": event_of(e).webhook_id} for e in evs])
