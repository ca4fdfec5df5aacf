"""Campaign stats read from their counters (``projections/campaign_stats.py``), which handlers keep
as events land: a campaign's figures are a few primary-key reads, whatever its number of emails.
(The account's and senders' sending usage is ``engine/service/usage.py``.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, func, literal, select, union_all

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


def _next_whole_hour(at: datetime) -> datetime:
    """The first start of a UTC hour at or after ``at``."""
    start = at.replace(minute=0, second=0, microsecond=0)
    return start if start == at else start + timedelta(hours=1)


class StatsService:
    """The counted parts of campaign stats (emails, rates, engagement, throughput, senders,
    enrollments by status, skips by reason, per step and variant, per minute)."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.clock = clock
        self.reads = Reads(store)

    async def counters_many(self, cids: Sequence[str]) -> dict[str, Counters]:
        """Every counter row of the campaigns: one read on the counters' primary key."""
        found: dict[str, Counters] = {cid: {} for cid in cids}
        if not cids:
            return found
        c = cs.counts.c
        for row in await self.reads.all(select(cs.counts).where(c.campaign_id.in_(list(cids)))):
            found[row["campaign_id"]].setdefault(row["kind"], {})[row["key"]] = {
                name: int(row[name]) for name in cs.FIGURES}
        return found

    async def email_stats_many(self, ws: str, cids: Sequence[str],
                               counters: dict[str, Counters] | None = None) -> dict[str, dict[str, Any]]:
        """The email part of ``GET .../stats`` for several campaigns at once: the counters' rows, the
        sends of the last day (an index range), the senders' statuses; a fixed number of reads
        whatever the number of campaigns, so a page of the campaign list costs one campaign's.
        ``counters``, when the caller has read them already (:meth:`counters_many`), spares a read."""
        if not cids:
            return {}
        if counters is None:
            counters = await self.counters_many(cids)
        windows = await self._throughput_many(cids, self.clock.now())
        sender_ids = sorted({key for cid in cids for key, n in counters[cid].get(cs.SENDER, {}).items()
                             if n["total"]})
        sc = t.senders.c
        statuses = {r["id"]: r["status"] for r in await self.reads.all(
            select(sc.id, sc.status).where(sc.id.in_(sender_ids), sc.workspace_id == ws))} if sender_ids else {}
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

    async def _throughput_many(self, cids: Sequence[str],
                               now: datetime) -> dict[str, dict[str | None, tuple[int, int]]]:
        """Per campaign and sender (None: no sender now), its emails sent in the last hour and the
        last day, by the engine clock (a later send, from a clock set back, is left out rather
        than counted ahead of time).

        The whole UTC hours inside a window come from the hourly counters (at most 24 rows per
        sender); the partial hours at its two ends, from three ranges of the (campaign, sent time)
        index: at most two hours of sends are read, whatever the campaign's size."""
        now = now.astimezone(UTC)
        this_hour = now.replace(minute=0, second=0, microsecond=0)
        hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
        hour_whole, day_whole = _next_whole_hour(hour_ago), _next_whole_hour(day_ago)
        f = cs.email_facts.c

        def sends(label: str, lo: datetime, hi: Any) -> Any:
            return (select(f.campaign_id, f.sender_id, literal(label, String).label("part"), func.count().label("n"))
                    .where(f.campaign_id.in_(list(cids)), f.sent_at >= format_time(lo), hi)
                    .group_by(f.campaign_id, f.sender_id))

        edges = await self.reads.all(union_all(
            sends("day", day_ago, f.sent_at < format_time(day_whole)),
            sends("hour", hour_ago, f.sent_at < format_time(hour_whole)),
            sends("now", this_hour, f.sent_at <= format_time(now))))
        h = cs.hours.c
        whole = await self.reads.all(select(h.campaign_id, h.sender_id, h.hour, h.sent).where(
            h.campaign_id.in_(list(cids)), h.hour >= format_time(day_whole), h.hour < format_time(this_hour)))
        counted: dict[str, dict[str | None, list[int]]] = {}
        for row in edges:
            pair = counted.setdefault(row["campaign_id"], {}).setdefault(row["sender_id"], [0, 0])
            n = int(row["n"])
            if row["part"] != "day":
                pair[0] += n
            if row["part"] != "hour":
                pair[1] += n
        hour_from = format_time(hour_whole)
        for row in whole:
            pair = counted.setdefault(row["campaign_id"], {}).setdefault(row["sender_id"] or None, [0, 0])
            n = int(row["sent"])
            if row["hour"] >= hour_from:
                pair[0] += n
            pair[1] += n
        return {cid: {sender: (n[0], n[1]) for sender, n in by_sender.items()} for cid, by_sender in counted.items()}

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
