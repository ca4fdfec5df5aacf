"""Campaign stats read from their counters (``projections/campaign_stats.py``), which handlers keep
as events land: a campaign's figures are a few primary-key reads, whatever its number of emails.
(The account's and senders' sending usage is ``engine/service/usage.py``.)"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.clock import Clock
from engine.service.base import Reads
from events.registry import format_time
from events.store import EventStore
from projections import campaign_stats as cs
from projections import tables as t

# One campaign's counters: kind -> key -> figure -> count (see projections/campaign_stats.py).
Counters = dict[str, dict[str, dict[str, int]]]


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _next_whole(at: datetime, span: str) -> datetime:
    """The first start of a UTC ``span`` ("hour" or "minute") at or after ``at``."""
    if span == "hour":
        start, step = at.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    else:
        start, step = at.replace(second=0, microsecond=0), timedelta(minutes=1)
    return start if start == at else start + step


@functools.cache
def _throughput_statement() -> Any:
    """The throughput windows' one UNION ALL, built once with its bounds as parameters (see
    :meth:`StatsService._throughput_many`): building its eight parts again at every read cost more
    than running them."""
    facts, sends = cs.email_facts.c, cs.sends.c
    ids: Any = bindparam("ids", expanding=True)

    def emails(part: str, lo: str, hi: Any) -> Any:
        return (select(facts.campaign_id, facts.sender_id, literal(part, String).label("part"),
                       func.count().label("n"))
                .where(facts.campaign_id.in_(ids), facts.sent_at >= bindparam(lo), hi)
                .group_by(facts.campaign_id, facts.sender_id))

    def counted(part: str, span: str, lo: str, hi: str) -> Any:
        return (select(sends.campaign_id, sends.sender_id, literal(part, String).label("part"),
                       func.sum(sends.sent).label("n"))
                .where(sends.campaign_id.in_(ids), sends.span == span, sends.start >= bindparam(lo),
                       sends.start < bindparam(hi))
                .group_by(sends.campaign_id, sends.sender_id))

    parts = []
    for window in ("day", "hour"):
        parts += [emails(window, f"{window}_lo", facts.sent_at < bindparam(f"{window}_minute")),
                  counted(window, "minute", f"{window}_minute", f"{window}_hour")]
    # Whole hours before the hour window's first whole hour count in the day only.
    parts += [counted("day", "hour", "day_hour", "hour_hour"), counted("both", "hour", "hour_hour", "this_hour"),
              counted("both", "minute", "this_hour", "this_minute"),
              emails("both", "this_minute", facts.sent_at <= bindparam("now"))]
    return union_all(*parts)


class StatsService:
    """The counted parts of campaign stats (emails, rates, engagement, throughput, senders,
    enrollments by status, skips by reason, per step and variant, per minute)."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.clock = clock
        self.reads = Reads(store)

    async def counters_many(self, cids: Sequence[str], conn: AsyncConnection | None = None) -> dict[str, Counters]:
        """Every counter row of the campaigns: one read on the counters' primary key (on ``conn`` when given)."""
        found: dict[str, Counters] = {cid: {} for cid in cids}
        if not cids:
            return found
        c = cs.counts.c
        for row in await self.reads.all(select(cs.counts).where(c.campaign_id.in_(list(cids))), conn):
            found[row["campaign_id"]].setdefault(row["kind"], {})[row["key"]] = {
                name: int(row[name]) for name in cs.FIGURES}
        return found

    async def email_stats_many(self, ws: str, cids: Sequence[str], counters: dict[str, Counters] | None = None,
                               conn: AsyncConnection | None = None) -> dict[str, dict[str, Any]]:
        """The email part of ``GET .../stats`` for several campaigns at once: the counters' rows, the
        sends of the last day (an index range), the senders' statuses; a fixed number of reads
        whatever the number of campaigns, so a page of the campaign list costs one campaign's.
        ``counters``, when the caller has read them already (:meth:`counters_many`), spares a read;
        ``conn``, when given, is the connection to read on."""
        if not cids:
            return {}
        if counters is None:
            counters = await self.counters_many(cids, conn)
        windows = await self._throughput_many(cids, self.clock.now(), conn)
        sender_ids = sorted({key for cid in cids for key, n in counters[cid].get(cs.SENDER, {}).items()
                             if n["total"]})
        sc = t.senders.c
        statuses = {r["id"]: r["status"] for r in await self.reads.all(
            select(sc.id, sc.status).where(sc.id.in_(sender_ids), sc.workspace_id == ws), conn)} if sender_ids else {}
        out = {}
        for cid in cids:
            kinds = counters[cid]
            n = kinds.get(cs.CAMPAIGN, {}).get("") or dict.fromkeys(cs.FIGURES, 0)
            sent = n["sent"]
            by_sender = windows.get(cid, {})
            last_hour = sum(h for h, _ in by_sender.values())
            last_day = sum(d for _, d in by_sender.values())
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
                               "opens_total": n["opens_total"]},
                "rates": {"open_rate": _pct(n["opened"], sent), "click_rate": _pct(n["clicked"], sent),
                          "reply_rate": _pct(n["replied"], sent),
                          "bounce_rate": _pct(n["bounced"], sent + n["refused"]),
                          "unsubscribe_rate": _pct(n["unsubscribed"], sent),
                          "complaint_rate": _pct(n["complained"], sent)},
                "throughput": {"last_hour": float(last_hour), "last_day": round(last_day / 24, 2)},
                "senders": self._senders(kinds.get(cs.SENDER, {}), by_sender, statuses),
                "_contacted": n["contacted"],
            }
        return out

    @staticmethod
    def _senders(rows: dict[str, dict[str, int]], windows: dict[str | None, tuple[int, int]],
                 statuses: dict[str, str]) -> list[dict[str, Any]]:
        """The campaign's senders (those of at least one of its emails), by id. A sender's
        bounce_rate has the campaign's denominator (contract section 3): sent plus the emails
        refused during SMTP, which were attempted but never counted as sent; its complaint_rate
        is over sent."""
        out = []
        for sender_id in sorted(rows):
            n = rows[sender_id]
            if not n["total"]:
                continue
            last_hour, last_day = windows.get(sender_id, (0, 0))
            out.append({"sender_id": sender_id, "sent": n["sent"], "bounced": n["bounced"],
                        "bounce_rate": _pct(n["bounced"], n["sent"] + n["refused"]),
                        "status": statuses.get(sender_id, "removed"),
                        "complained": n["complained"], "complaint_rate": _pct(n["complained"], n["sent"]),
                        "throughput": {"last_hour": float(last_hour), "last_day": round(last_day / 24, 2)}})
        return out

    async def _throughput_many(self, cids: Sequence[str], now: datetime, conn: AsyncConnection | None = None
                               ) -> dict[str, dict[str | None, tuple[int, int]]]:
        """Per campaign and sender (None: no sender now), its emails sent in the last hour and the
        last day, by the engine clock (a later send, from a clock set back, is left out rather
        than counted ahead of time).

        Each window is cut into its whole UTC hours, the whole minutes of its partial hours and
        its partial minutes at both ends: the first two come from the send counters (a few rows
        per sender), only the last from the (campaign, sent time) index (two minutes of sends),
        so the read stays small at any size and sending rate."""
        now = now.astimezone(UTC)
        hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
        bounds = {"day_lo": day_ago, "day_minute": _next_whole(day_ago, "minute"),
                  "day_hour": _next_whole(day_ago, "hour"), "hour_lo": hour_ago,
                  "hour_minute": _next_whole(hour_ago, "minute"), "hour_hour": _next_whole(hour_ago, "hour"),
                  "this_hour": now.replace(minute=0, second=0, microsecond=0),
                  "this_minute": now.replace(second=0, microsecond=0), "now": now}
        params: dict[str, Any] = {name: format_time(at) for name, at in bounds.items()}
        params["ids"] = list(cids)
        if conn is None:
            async with self.reads.store.reading() as own:
                found = (await own.execute(_throughput_statement(), params)).mappings().all()
        else:
            found = (await conn.execute(_throughput_statement(), params)).mappings().all()
        out: dict[str, dict[str | None, tuple[int, int]]] = {}
        for row in found:
            by_sender = out.setdefault(row["campaign_id"], {})
            sender = row["sender_id"] or None
            last_hour, last_day = by_sender.get(sender, (0, 0))
            n = int(row["n"] or 0)
            by_sender[sender] = (last_hour + (n if row["part"] != "day" else 0),
                                 last_day + (n if row["part"] != "hour" else 0))
        return out

    async def step_counts(self, cid: str) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, dict[str, int]]]]:
        """Per step, and per step and A/B variant, the counts of ``stats/steps`` (sent, opened,
        clicked, replied, bounced, refused): only the steps and variants that have emails."""
        kinds = (await self.counters_many([cid]))[cid]
        wanted = ("sent", "opened", "clicked", "replied", "bounced", "refused")
        steps = {int(key): {name: n[name] for name in wanted}
                 for key, n in kinds.get(cs.STEP, {}).items() if n["total"]}
        variants: dict[int, dict[str, dict[str, int]]] = {}
        for key, n in kinds.get(cs.VARIANT, {}).items():
            if n["total"]:
                step, variant = key.split("|", 1)
                variants.setdefault(int(step), {})[variant] = {name: n[name] for name in wanted}
        return steps, variants

    async def timeline_minutes(self, cid: str, lo: str, hi: str) -> list[dict[str, Any]]:
        """The campaign's per-minute counts (``minute``, sent, opened, clicked, replied, bounced) of
        the minutes from ``lo`` up to, not including, ``hi`` (both times on a whole minute)."""
        m = cs.minutes.c
        rows = await self.reads.all(select(cs.minutes).where(m.campaign_id == cid, m.minute >= lo[:16],
                                                             m.minute < hi[:16]).order_by(m.minute))
        return [dict(row) for row in rows]

    async def first_sent_at(self, cid: str) -> str | None:
        """The campaign's first send time (the timeline's default start), or None before any."""
        f = cs.email_facts.c
        rows = await self.reads.all(select(f.sent_at).where(f.campaign_id == cid, f.sent_at.is_not(None))
                                    .order_by(f.sent_at).limit(1))
        return rows[0]["sent_at"] if rows else None
