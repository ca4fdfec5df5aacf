"""Small builders for schedule tests: campaigns, senders and queue items with sensible defaults."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.schedule import (
    CampaignPlan,
    Delay,
    QueueItem,
    ScheduleSpec,
    SenderPlan,
    SendRecord,
    Usage,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def campaign(
    cid: str = "c1",
    *,
    workspace: str = "w1",
    senders: tuple[str, ...] = ("s1",),
    delays: tuple[Delay, ...] = (Delay(),),
    active: bool = True,
    **schedule: Any,
) -> CampaignPlan:
    return CampaignPlan(
        campaign_id=cid,
        workspace_id=workspace,
        schedule=ScheduleSpec(**schedule),
        sender_ids=senders,
        step_delays=delays,
        active=active,
    )


def sender(sid: str = "s1", limit: int | None = 50, pct: float = 0.0, active: bool = True) -> SenderPlan:
    return SenderPlan(sender_id=sid, daily_limit=limit, daily_limit_variation_pct=pct, active=active)


def item(
    email_id: str,
    due: datetime,
    *,
    campaign_id: str = "c1",
    step: int = 1,
    priority: int = 0,
    pinned: str | None = None,
    tz: str | None = None,
    seq: int = 0,
    enrollment: str | None = None,
) -> QueueItem:
    return QueueItem(
        email_id=email_id,
        enrollment_id=enrollment or f"enr-{email_id}",
        campaign_id=campaign_id,
        contact_id=f"con-{email_id}",
        step=step,
        due_at=due,
        priority=priority,
        sender_id=pinned,
        contact_timezone=tz,
        seq=seq,
    )


def items(n: int, due: datetime, campaign_id: str = "c1", prefix: str = "e") -> list[QueueItem]:
    return [item(f"{prefix}{i:03d}", due, campaign_id=campaign_id, seq=i) for i in range(n)]


def by_id(*values: Any) -> dict[str, Any]:
    """{campaign_id or sender_id: value} for the given CampaignPlans / SenderPlans."""
    out: dict[str, Any] = {}
    for value in values:
        key = value.campaign_id if isinstance(value, CampaignPlan) else value.sender_id
        out[key] = value
    return out


def usage_of(records: Iterable[SendRecord], campaigns: Mapping[str, CampaignPlan]) -> Usage:
    return Usage.from_sends(list(records), campaigns)
