"""Email counts behind stats, the account and sender health, all from ``rm_emails``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from engine.service.base import ServiceBase
from events.registry import format_time
from projections import tables as t
from projections.sending import emails

E = emails.c


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _month_start(now: datetime) -> str:
    return format_time(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def _day_start(now: datetime) -> str:
    return format_time(now.replace(hour=0, minute=0, second=0, microsecond=0))


class StatsService(ServiceBase):
    async def _email_stats(self, ws: str, cid: str) -> dict[str, Any]:
        def count(cond: Any) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        q = select(
            count(E.status == "scheduled").label("scheduled"), count(E.status == "claimed").label("claimed"),
            count(E.sent_at.is_not(None)).label("sent"), count(E.last_code.between(400, 499)
                                                               & (E.status == "scheduled")).label("deferred"),
            count(E.status == "failed").label("failed"), count(E.status == "bounced").label("bounced"),
            count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"),
            count(E.status == "cancelled").label("cancelled"), count(E.status == "uncertain").label("uncertain"),
            count(E.bounce_type == "hard").label("hard"), count(E.bounce_type == "soft").label("soft"),
            count(E.bounce_type == "block").label("block"),
            count(E.opened_at.is_not(None)).label("opened"), count(E.clicked_at.is_not(None)).label("clicked"),
            count(E.replied_at.is_not(None)).label("replied"),
            count(E.unsubscribed_at.is_not(None) | E.complained_at.is_not(None)).label("unsubscribed"),
            count(E.out_of_office.is_(True)).label("out_of_office"),
        ).where(E.campaign_id == cid, E.workspace_id == ws)
        r = (await self._all(q))[0]
        n = {k: int(v) for k, v in dict(r).items()}
        sent = n["sent"]
        senders = []
        # A sender's bounce_rate has the campaign's denominator (contract section 3): sent plus the
        # emails refused during SMTP, which were attempted but never counted as sent.
        for row in await self._all(select(E.sender_id, count(E.sent_at.is_not(None)).label("sent"),
                                          count(E.status == "bounced").label("bounced"),
                                          count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"))
                                   .where(E.campaign_id == cid, E.sender_id.is_not(None)).group_by(E.sender_id)
                                   .order_by(E.sender_id)):
            status = await self._all(select(t.senders.c.status).where(t.senders.c.id == row["sender_id"]))
            s_sent, s_b, s_refused = int(row["sent"]), int(row["bounced"]), int(row["refused"])
            senders.append({"sender_id": row["sender_id"], "sent": s_sent, "bounced": s_b,
                            "bounce_rate": _pct(s_b, s_sent + s_refused),
                            "status": status[0]["status"] if status else "removed"})
        return {
            "emails": {"scheduled": n["scheduled"] + n["claimed"], "sent": sent, "deferred": n["deferred"],
                       "failed": n["failed"], "bounced": n["bounced"], "cancelled": n["cancelled"],
                       "uncertain": n["uncertain"],
                       "bounce_types": {"hard": n["hard"], "soft": n["soft"], "block": n["block"]}},
            "engagement": {k: n[k] for k in ("opened", "clicked", "replied", "unsubscribed", "out_of_office")},
            "rates": {"open_rate": _pct(n["opened"], sent), "click_rate": _pct(n["clicked"], sent),
                      "reply_rate": _pct(n["replied"], sent), "bounce_rate": _pct(n["bounced"], sent + n["refused"]),
                      "unsubscribe_rate": _pct(n["unsubscribed"], sent)},
            "senders": senders,
        }

    async def _count_sent_this_month(self, ws: str) -> int:
        rows = await self._all(select(func.count().label("n")).select_from(emails).where(
            E.workspace_id == ws, E.sent_at >= _month_start(self.now())))
        return int(rows[0]["n"])

    async def sent_today(self, ws: str) -> int:
        rows = await self._all(select(func.count().label("n")).select_from(emails).where(
            E.workspace_id == ws, E.sent_at >= _day_start(self.now())))
        return int(rows[0]["n"])

    async def _sender_usage(self, ws: str, sid: str) -> tuple[int, float]:
        """(sent today, bounce rate %): bounced (blocks included) over sent, all campaigns."""
        today = await self._all(select(func.count().label("n")).select_from(emails).where(
            E.sender_id == sid, E.workspace_id == ws, E.sent_at >= _day_start(self.now())))
        totals = await self._all(select(
            func.coalesce(func.sum(case((E.sent_at.is_not(None), 1), else_=0)), 0).label("sent"),
            func.coalesce(func.sum(case((E.status == "bounced", 1), else_=0)), 0).label("bounced"),
        ).where(E.sender_id == sid, E.workspace_id == ws))
        sent, bounced = int(totals[0]["sent"]), int(totals[0]["bounced"])
        return int(today[0]["n"]), _pct(bounced, sent + (bounced if sent == 0 else 0))
