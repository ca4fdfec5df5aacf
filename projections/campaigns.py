"""The campaigns read model: definitions, status and lifecycle times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections import tables
from projections.base import (
    ReshapingProjection,
    compact_json,
    event_of,
    recorded_at_text,
)

# -- campaigns --------------------------------------------------------------------------------
# Version 2: paused_reason (the table is reshaped on databases made before).
campaigns = ReshapingProjection("campaigns", 2, [tables.campaigns])


async def _definition(conn: AsyncConnection, campaign_id: str) -> dict[str, Any]:
    raw = (await conn.execute(select(tables.campaigns.c.definition).where(
        tables.campaigns.c.id == campaign_id))).scalar()
    return json.loads(raw) if raw else {}


@campaigns.on("campaign.created")
async def _cmp_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = event_of(e).definition
        await conn.execute(tables.campaigns.insert().values(
            id=event_of(e).campaign_id, workspace_id=e.workspace_id, name=d["name"], status="draft",
            folder=d.get("folder"), tags=compact_json(d.get("tags") or []), outreach_id=d.get("outreach_id"),
            definition=compact_json(d), launch_at=(d.get("schedule") or {}).get("launch_at"),
            created_at=recorded_at_text(e),
            updated_at=recorded_at_text(e), launched_at=None, completed_at=None, approved_at=None, paused_reason=None,
            deleted=False))


@campaigns.on("campaign.updated", "campaign.schedule_changed")
async def _cmp_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        cid = event_of(e).campaign_id
        definition = await _definition(conn, cid)
        changes = event_of(e).changes if e.type == "campaign.updated" else {"schedule": event_of(e).schedule}
        definition.update(changes)
        await conn.execute(update(tables.campaigns).where(tables.campaigns.c.id == cid).values(
            name=definition["name"], folder=definition.get("folder"), tags=compact_json(definition.get("tags") or []),
            outreach_id=definition.get("outreach_id"), definition=compact_json(definition),
            launch_at=(definition.get("schedule") or {}).get("launch_at"), updated_at=recorded_at_text(e)))


_STATUS_BY_TYPE = {
    "campaign.paused": "paused", "campaign.resumed": "active", "campaign.completed": "completed",
    "campaign.cancelled": "cancelled", "campaign.archived": "archived", "campaign.activated": "active",
}


@campaigns.on(*_STATUS_BY_TYPE)
async def _cmp_status(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        values: dict[str, Any] = {"status": _STATUS_BY_TYPE[e.type], "updated_at": recorded_at_text(e)}
        if e.type == "campaign.completed":
            values["completed_at"] = recorded_at_text(e)
        if e.type in ("campaign.paused", "campaign.resumed"):  # a resume clears the guard's reason
            values["paused_reason"] = event_of(e).reason if e.type == "campaign.paused" else None
        await conn.execute(update(tables.campaigns).where(
            tables.campaigns.c.id == event_of(e).campaign_id).values(**values))


_CMP = tables.campaigns


@campaigns.on("campaign.launched")
async def _cmp_launched(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(
        status=bindparam("st"), launched_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": event_of(e).campaign_id, "st": event_of(e).status, "at": recorded_at_text(e),
          "u": recorded_at_text(e)} for e in evs])


@campaigns.on("campaign.approved")
async def _cmp_approved(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(
        approved_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": event_of(e).campaign_id, "at": recorded_at_text(e), "u": recorded_at_text(e)} for e in evs])


@campaigns.on("campaign.deleted")
async def _cmp_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(deleted=True, updated_at=bindparam("u")),
                       [{"i": event_of(e).campaign_id, "u": recorded_at_text(e)} for e in evs])


@campaigns.on("campaign.variant_won")
async def _cmp_variant_won(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The winner goes into the stored definition's ``variant_winners`` (step number as text ->
    variant id), where the tick reads the definition anyway: composing an email needs no other
    read. The campaign's API view lists its fields by name, so this bookkeeping is not shown."""
    for e in evs:
        cid = event_of(e).campaign_id
        definition = await _definition(conn, cid)
        definition["variant_winners"] = {**(definition.get("variant_winners") or {}),
                                         str(event_of(e).step): event_of(e).variant}
        await conn.execute(update(tables.campaigns).where(tables.campaigns.c.id == cid).values(
            definition=compact_json(definition)))
