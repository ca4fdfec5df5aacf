"""What a workspace and a sender have sent, counted from ``rm_emails``: the monthly plan limit,
today's count and a sender's health. Management, campaigns (the plan check of launch and
dispatch) and test sends all need them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select

from engine.clock import Clock
from engine.service.base import Reads
from events.registry import format_time
from events.store import EventStore
from projections.sending import emails

E = emails.c


def month_start(now: datetime) -> str:
    return format_time(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def day_start(now: datetime) -> str:
    return format_time(now.replace(hour=0, minute=0, second=0, microsecond=0))


def percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


class UsageCounts:
    """Sends counted on the engine clock: this calendar month (UTC), today, and per sender."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.clock = clock
        self.reads = Reads(store)

    async def sent_this_month(self, ws: str) -> int:
        """Emails accepted this calendar month (UTC)."""
        rows = await self.reads.all(select(func.count().label("n")).select_from(emails).where(
            E.workspace_id == ws, E.sent_at >= month_start(self.clock.now())))
        return int(rows[0]["n"])

    async def sent_today(self, ws: str) -> int:
        rows = await self.reads.all(select(func.count().label("n")).select_from(emails).where(
            E.workspace_id == ws, E.sent_at >= day_start(self.clock.now())))
        return int(rows[0]["n"])

    async def sender_usage(self, ws: str, sid: str) -> tuple[int, float]:
        """(sent today, bounce rate %): bounced (blocks included) over sent, all campaigns."""
        today = await self.reads.all(select(func.count().label("n")).select_from(emails).where(
            E.sender_id == sid, E.workspace_id == ws, E.sent_at >= day_start(self.clock.now())))
        totals = await self.reads.all(select(
            func.coalesce(func.sum(case((E.sent_at.is_not(None), 1), else_=0)), 0).label("sent"),
            func.coalesce(func.sum(case((E.status == "bounced", 1), else_=0)), 0).label("bounced"),
        ).where(E.sender_id == sid, E.workspace_id == ws))
        sent, bounced = int(totals[0]["sent"]), int(totals[0]["bounced"])
        return int(today[0]["n"]), percent(bounced, sent + (bounced if sent == 0 else 0))


__all__ = ["UsageCounts", "day_start", "month_start", "percent"]
