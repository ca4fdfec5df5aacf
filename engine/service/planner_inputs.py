"""Loading the planner's inputs from the read models (shared by tick and forecast)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.schedule import CampaignPlan, Delay, QueueItem, ScheduleSpec, SenderPlan, SendRecord, Usage
from events.registry import format_time, parse_time
from projections import tables as t
from projections.sending import emails

PLANNED_STATUSES = ("active", "scheduled")


@dataclass(frozen=True, slots=True)
class PlannerInputs:
    """Everything the pure planner needs, read in one go (under the log's lock when claiming)."""

    items: list[QueueItem]
    campaigns: dict[str, CampaignPlan]
    senders: dict[str, SenderPlan]
    usage: Usage
    monthly_limits: dict[str, int | None]
    definitions: dict[str, dict[str, Any]]


def campaign_plan(row: Any, definition: dict[str, Any]) -> CampaignPlan:
    return CampaignPlan(
        campaign_id=row["id"], workspace_id=row["workspace_id"],
        schedule=ScheduleSpec.from_dict(definition.get("schedule") or {}),
        sender_ids=tuple(definition.get("sender_ids") or ()),
        step_delays=tuple(Delay.from_dict(s.get("delay")) for s in definition.get("steps") or []),
        active=True,
    )


async def load_inputs(conn: AsyncConnection, now: datetime, workspace_id: str | None = None) -> PlannerInputs:
    c = t.campaigns.c
    q = select(t.campaigns).where(c.status.in_(PLANNED_STATUSES), c.deleted.is_(False))
    if workspace_id is not None:
        q = q.where(c.workspace_id == workspace_id)
    rows = (await conn.execute(q)).mappings().all()
    definitions = {r["id"]: json.loads(r["definition"]) for r in rows}
    campaigns = {r["id"]: campaign_plan(r, definitions[r["id"]]) for r in rows}
    workspaces = sorted({r["workspace_id"] for r in rows})

    s = t.senders.c
    senders = {r["id"]: SenderPlan(sender_id=r["id"], daily_limit=r["daily_limit"],
                                   daily_limit_variation_pct=float(r["daily_limit_variation_pct"]),
                                   active=r["status"] == "active" and not r["removed"])
               for r in (await conn.execute(select(t.senders).where(s.workspace_id.in_(workspaces)))).mappings()}
    w = t.workspaces.c
    monthly = {r["id"]: r["monthly_limit"]
               for r in (await conn.execute(select(w.id, w.monthly_limit).where(w.id.in_(workspaces)))).mappings()}

    e = emails.c
    items: list[QueueItem] = []
    if campaigns:
        q2 = (select(e.email_id, e.enrollment_id, e.campaign_id, e.contact_id, e.step, e.due_at, e.priority, e.seq,
                     e.sender_id, t.contacts.c.timezone)
              .join(t.contacts, t.contacts.c.id == e.contact_id)
              .where(e.status == "scheduled", e.campaign_id.in_(list(campaigns))))
        for r in (await conn.execute(q2)).mappings():
            items.append(QueueItem(email_id=r["email_id"], enrollment_id=r["enrollment_id"],
                                   campaign_id=r["campaign_id"], contact_id=r["contact_id"], step=r["step"],
                                   due_at=parse_time(r["due_at"]), priority=r["priority"], seq=r["seq"],
                                   sender_id=r["sender_id"], contact_timezone=r["timezone"]))
    usage = await load_usage(conn, now, workspaces, campaigns)
    return PlannerInputs(items, campaigns, senders, usage, monthly, definitions)


async def load_usage(conn: AsyncConnection, now: datetime, workspaces: list[str],
                     campaigns: dict[str, CampaignPlan]) -> Usage:
    """Sends of this UTC month and the two days before, plus each pair's latest send."""
    if not workspaces:
        return Usage.from_sends([], campaigns)
    e = emails.c
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    counted = e.claimed_at.is_not(None)
    rows = list((await conn.execute(select(e.campaign_id, e.sender_id, e.workspace_id, e.claimed_at).where(
        counted, e.workspace_id.in_(workspaces), e.claimed_at >= format_time(month_start)))).all())
    older = e.claimed_at < format_time(month_start)
    latest = (await conn.execute(select(e.campaign_id, e.sender_id, e.workspace_id, func.max(e.claimed_at))
                                 .where(counted, e.workspace_id.in_(workspaces), older)
                                 .group_by(e.campaign_id, e.sender_id, e.workspace_id))).all()
    rows.extend(latest)
    return Usage.from_sends([SendRecord(r[0], r[1], r[2], parse_time(r[3])) for r in rows if r[1]], campaigns)
