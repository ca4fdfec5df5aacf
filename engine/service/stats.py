"""Email counts behind campaign stats, from ``rm_emails`` (the account's and senders' counts are
``engine/service/usage.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select

from engine.clock import Clock
from engine.service.base import Reads
from events.registry import format_time
from events.store import EventStore
from projections import tables as t
from projections.engagement import opens
from projections.sending import emails

E = emails.c


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


class StatsService:
    """The email part of campaign stats (counts, rates, engagement, throughput, per sender)."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.clock = clock
        self.reads = Reads(store)

    async def email_stats_many(self, ws: str, cids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The email part of ``GET .../stats`` for several campaigns at once: a fixed number of
        grouped queries (emails, opens, senders' statuses), whatever the number of campaigns,
        so that a page of the campaign list costs what one campaign's stats cost."""
        if not cids:
            return {}
        now = self.clock.now()
        hour_ago, day_ago = format_time(now - timedelta(hours=1)), format_time(now - timedelta(days=1))
        until = format_time(now)
        sent_col = E.sent_at.is_not(None)
        # Emails sent in the throughput windows, by the engine clock (a later send cannot exist
        # unless the clock was set back; it is left out rather than counted ahead of time).
        last_hour = _count(sent_col & (E.sent_at >= hour_ago) & (E.sent_at <= until)).label("last_hour")
        last_day = _count(sent_col & (E.sent_at >= day_ago) & (E.sent_at <= until)).label("last_day")
        q = select(
            E.campaign_id, func.count().label("total"),
            _count(E.status == "scheduled").label("scheduled"), _count(E.status == "claimed").label("claimed"),
            _count(sent_col).label("sent"), _count(E.last_message.is_not(None)  # a 4xx or no connection at all
                                                   & (E.status == "scheduled")).label("deferred"),
            _count(E.status == "failed").label("failed"), _count(E.status == "bounced").label("bounced"),
            _count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"),
            _count(E.status == "cancelled").label("cancelled"), _count(E.status == "uncertain").label("uncertain"),
            _count(E.status == "quarantined").label("quarantined"),
            _count(E.bounce_type == "hard").label("hard"), _count(E.bounce_type == "soft").label("soft"),
            _count(E.bounce_type == "block").label("block"),
            _count(E.opened_at.is_not(None)).label("opened"), _count(E.clicked_at.is_not(None)).label("clicked"),
            _count(E.replied_at.is_not(None)).label("replied"),
            _count(E.unsubscribed_at.is_not(None) | E.complained_at.is_not(None)).label("unsubscribed"),
            _count(E.complained_at.is_not(None)).label("complained"),
            _count(E.out_of_office.is_(True)).label("out_of_office"),
            func.count(func.distinct(case((sent_col, E.contact_id), else_=None))).label("contacted"),
            last_hour, last_day,
        ).where(E.campaign_id.in_(list(cids)), E.workspace_id == ws).group_by(E.campaign_id)
        counted = {r["campaign_id"]: {k: int(v) for k, v in dict(r).items() if k != "campaign_id"}
                   for r in await self.reads.all(q)}
        o = opens.c
        opens_total = {r["campaign_id"]: int(r["n"]) for r in await self.reads.all(
            select(o.campaign_id, func.sum(o.opens).label("n")).where(o.campaign_id.in_(list(cids)))
            .group_by(o.campaign_id))}
        senders = await self._sender_stats_many(ws, cids, hour_ago, day_ago, until)
        out = {}
        for cid in cids:
            n = counted.get(cid) or {k: 0 for k in (
                "total", "scheduled", "claimed", "sent", "deferred", "failed", "bounced", "refused", "cancelled",
                "uncertain", "quarantined", "hard", "soft", "block", "opened", "clicked", "replied", "unsubscribed",
                "complained", "out_of_office", "contacted", "last_hour", "last_day")}
            sent = n["sent"]
            out[cid] = {
                "emails": {"scheduled": n["scheduled"] + n["claimed"], "sent": sent, "deferred": n["deferred"],
                           "failed": n["failed"], "bounced": n["bounced"], "cancelled": n["cancelled"],
                           "uncertain": n["uncertain"],
                           "quarantined": n["quarantined"],  # poison messages set aside (never sent)
                           "bounce_types": {"hard": n["hard"], "soft": n["soft"], "block": n["block"]},
                           # sent - bounced, as the contract defines it (never below zero).
                           "delivered": max(sent - n["bounced"], 0), "complained": n["complained"],
                           "total": n["total"]},
                "engagement": {**{k: n[k] for k in ("opened", "clicked", "replied", "unsubscribed",
                                                    "out_of_office")},
                               "opens_total": opens_total.get(cid, 0)},
                "rates": {"open_rate": _pct(n["opened"], sent), "click_rate": _pct(n["clicked"], sent),
                          "reply_rate": _pct(n["replied"], sent),
                          "bounce_rate": _pct(n["bounced"], sent + n["refused"]),
                          "unsubscribe_rate": _pct(n["unsubscribed"], sent),
                          "complaint_rate": _pct(n["complained"], sent)},
                "throughput": {"last_hour": float(n["last_hour"]), "last_day": round(n["last_day"] / 24, 2)},
                "senders": senders.get(cid, []),
                "_contacted": n["contacted"],
            }
        return out

    async def _sender_stats_many(self, ws: str, cids: Sequence[str], hour_ago: str, day_ago: str,
                                 until: str) -> dict[str, list[dict[str, Any]]]:
        """Per campaign, its senders' counts. A sender's bounce_rate has the campaign's
        denominator (contract section 3): sent plus the emails refused during SMTP, which were
        attempted but never counted as sent; its complaint_rate is over sent."""
        sent_col = E.sent_at.is_not(None)
        rows = await self.reads.all(
            select(E.campaign_id, E.sender_id, _count(sent_col).label("sent"),
                   _count(E.status == "bounced").label("bounced"),
                   _count((E.status == "bounced") & (E.bounce_source == "smtp")).label("refused"),
                   _count(E.complained_at.is_not(None)).label("complained"),
                   _count(sent_col & (E.sent_at >= hour_ago) & (E.sent_at <= until)).label("last_hour"),
                   _count(sent_col & (E.sent_at >= day_ago) & (E.sent_at <= until)).label("last_day"))
            .where(E.campaign_id.in_(list(cids)), E.workspace_id == ws, E.sender_id.is_not(None))
            .group_by(E.campaign_id, E.sender_id).order_by(E.campaign_id, E.sender_id))
        sc = t.senders.c
        ids = sorted({r["sender_id"] for r in rows})
        statuses = {r["id"]: r["status"] for r in await self.reads.all(
            select(sc.id, sc.status).where(sc.id.in_(ids), sc.workspace_id == ws))} if ids else {}
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            s_sent, s_b, s_refused, s_c = (int(row["sent"]), int(row["bounced"]), int(row["refused"]),
                                           int(row["complained"]))
            out.setdefault(row["campaign_id"], []).append({
                "sender_id": row["sender_id"], "sent": s_sent, "bounced": s_b,
                "bounce_rate": _pct(s_b, s_sent + s_refused), "status": statuses.get(row["sender_id"], "removed"),
                "complained": s_c, "complaint_rate": _pct(s_c, s_sent),
                "throughput": {"last_hour": float(int(row["last_hour"])),
                               "last_day": round(int(row["last_day"]) / 24, 2)}})
        return out
