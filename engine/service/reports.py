"""Campaign reports: per-step stats, a timeline in the campaign's time zone, activity, skips, replies.

Counts come from the campaign's counters (``projections/campaign_stats.py``: per step, variant and
minute, kept as events land from each email's facts, engagement flags set once), the same ones
``GET .../stats`` reads, so every number here agrees with it. The activity feed and reply times read the log itself, but
only the campaign's own streams (``enrollment-<id>`` of its enrollments, found in
``rm_enrollments``, plus the enrollment-time skips whose positions ``rm_skips`` keeps), with the
filters and the page limit pushed into one SQL query: no request scans the whole log.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.clock import Clock
from engine.delivery.content.compose import subject_template
from engine.domain.definition import CampaignDefinition, definition_from_json
from engine.domain.enrollment import SKIP_REASONS
from engine.errors import NotFound, ValidationFailed
from engine.schedule.tzutil import hour_start, local_day_start, resolve_wall, zone
from engine.service.base import Reads
from engine.service.cursors import Cursors, cursor_error
from engine.service.stats import StatsService
from events import catalog as _catalog  # noqa: F401  (registers the event types listed below)
from events import schema
from events.catalog.email import EmailReplied
from events.registry import all_types, format_time, to_data
from events.store import EventStore, StoredEvent
from projections import tables as t
from projections.campaign_stats import TIMELINE_FIGURES
from projections.engagement import link_clicks
from projections.sending import emails

E = emails.c
EV = schema.events.c
INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
MAX_BUCKETS = 2000
MAX_LIMIT = 500
# Fields every email event carries: shown at the top level of an activity item, not in metadata.
_COMMON = frozenset({"enrollment_id", "campaign_id", "contact_id", "email_id", "step"})


def activity_types() -> list[str]:
    """Every event type the activity feed shows: the email and enrollment events."""
    return sorted(n for n in all_types() if n.startswith(("email.", "enrollment.")))


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


# -- query parameters ----------------------------------------------------------------------------
class _Params:
    """Collects every bad parameter of one request, so a 422 names them all at once."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.errors: list[dict[str, str]] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def time(self, field: str, value: Any) -> datetime | None:
        """An ISO 8601 time; one without an offset (or a bare date) is read in the campaign's zone.

        A ``+02:00`` offset sent unencoded in a query string arrives as a space: put it back.
        """
        if value is None or value == "":
            return None
        text = str(value).strip()
        if " " in text and "T" in text:
            text = text.replace(" ", "+")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(field, f"{field} must be an ISO 8601 time such as 2026-03-29T00:00:00Z")
            return None
        if parsed.tzinfo is None:
            return resolve_wall(parsed, self.tz)
        return parsed.astimezone(UTC)

    def integer(self, field: str, value: Any, default: int, lo: int, hi: int | None = None) -> int:
        if value is None or value == "":
            return default
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = lo - 1
        if n < lo or (hi is not None and n > hi):
            self.fail(field, f"{field} must be an integer between {lo} and {hi}" if hi is not None
                      else f"{field} must be an integer >= {lo}")
            return default
        return n

    def check(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


# -- timeline buckets (pure) ---------------------------------------------------------------------
def bucket_start(at: datetime, tz: ZoneInfo, interval: str) -> datetime:
    """The UTC instant at which the local hour, day or Monday-based week containing `at` began."""
    if interval == "hour":
        return hour_start(at, tz)
    day = at.astimezone(tz).date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    return local_day_start(day, tz)


def next_bucket(start: datetime, tz: ZoneInfo, interval: str) -> datetime:
    """The start of the bucket after the one starting at `start`: local wall-clock steps, so a
    day across a DST change lasts 23 or 25 hours and a fall-back night has two 02:00 hours."""
    if interval == "hour":
        nxt = hour_start(start + timedelta(hours=1), tz)
        return nxt if nxt > start else start + timedelta(hours=1)
    day: date = start.astimezone(tz).date() + INTERVALS[interval]
    return local_day_start(day, tz)


def buckets(start: datetime, end: datetime, tz: ZoneInfo, interval: str) -> list[datetime]:
    """Starts of every bucket from the one holding `start` to the last one beginning before `end`
    (at least one), plus the end of the last bucket as a final fence."""
    if (end - start) / INTERVALS[interval] > MAX_BUCKETS + 2:  # refuse before building millions
        raise _too_many()
    out = [bucket_start(start, tz, interval)]
    while True:
        nxt = next_bucket(out[-1], tz, interval)
        out.append(nxt)
        if nxt >= end:
            return out
        if len(out) - 1 >= MAX_BUCKETS:
            raise _too_many()


def _too_many() -> ValidationFailed:
    return ValidationFailed([{"field": "interval", "message":
                              f"more than {MAX_BUCKETS} buckets: narrow from/to or use a longer interval"}])


# -- the service ---------------------------------------------------------------------------------
class ReportService:
    """Per-step and per-link stats, timelines, activity, skips and replies of a campaign."""

    def __init__(self, store: EventStore, clock: Clock, *, stats: StatsService) -> None:
        self.store = store
        self.clock = clock
        self.reads = Reads(store)
        self.stats = stats

    async def _report_campaign(self, ws: str, cid: str) -> tuple[CampaignDefinition, ZoneInfo]:
        """The campaign's definition and time zone; NotFound for an unknown, deleted or foreign id."""
        c = t.campaigns.c
        rows = await self.reads.all(select(c.definition).where(c.id == cid, c.workspace_id == ws,
                                                               c.deleted.is_(False)))
        if not rows:
            raise NotFound("campaign", cid)
        definition = definition_from_json(rows[0]["definition"])
        return definition, zone(definition.schedule.timezone)

    async def _contact_emails(self, ws: str, ids: Sequence[str], conn: AsyncConnection | None = None
                              ) -> dict[str, str | None]:
        """Each contact's current email (None once erased)."""
        c = t.contacts.c
        out: dict[str, str | None] = {}
        unique = sorted(set(ids))
        for i in range(0, len(unique), 400):
            for r in await self.reads.all(
                    select(c.id, c.email).where(c.workspace_id == ws, c.id.in_(unique[i:i + 400])), conn):
                out[r["id"]] = r["email"]
        return out

    # -- per step ------------------------------------------------------------------------------
    async def campaign_step_stats(self, ws: str, cid: str) -> list[dict[str, Any]]:
        """One entry per step of the definition (unsent ones too), plus any step that was sent
        and has since been removed from the definition (its ``subject`` is then null).

        ``subject`` is the template the step is sent with (compose's own rule, so a same-thread
        follow-up with a blank subject shows ``Re: `` + step 1's subject, as the recipient sees it)."""
        definition, _ = await self._report_campaign(ws, cid)
        counted, variant_counts = await self.stats.step_counts(cid)  # the counters, kept as events land
        by_variant = self._variant_stats(definition, variant_counts)
        steps = definition.steps
        out = []
        for n in sorted(set(range(1, len(steps) + 1)) | set(counted)):
            r = counted.get(n, {})
            sent = r.get("sent", 0)
            out.append({
                "step": n, "subject": subject_template(definition, n) if n <= len(steps) else None,
                "node_id": steps[n - 1].node_id if n <= len(steps) else None,
                "sent": sent, "opened": r.get("opened", 0), "clicked": r.get("clicked", 0),
                "replied": r.get("replied", 0), "bounced": r.get("bounced", 0),
                "open_rate": _pct(r.get("opened", 0), sent), "click_rate": _pct(r.get("clicked", 0), sent),
                "reply_rate": _pct(r.get("replied", 0), sent),
                "bounce_rate": _pct(r.get("bounced", 0), sent + r.get("refused", 0)),
                "variants": by_variant.get(n, []),
            })
        return out

    @staticmethod
    def _variant_stats(definition: CampaignDefinition, counted: dict[int, dict[str, dict[str, int]]]
                       ) -> dict[int, list[dict[str, Any]]]:
        """Per step, one entry per A/B variant (the definition's, in order, then any variant sent and
        since removed), with ``winner`` true for the one recorded by ``campaign.variant_won``."""
        winners = definition.winners()
        steps = definition.steps
        out: dict[int, list[dict[str, Any]]] = {}
        for n in sorted(set(range(1, len(steps) + 1)) | set(counted)):
            ids = steps[n - 1].variant_ids() if n <= len(steps) else []
            found = counted.get(n, {})
            ids += sorted(set(found) - set(ids))
            entries = []
            for variant in ids:
                c = found.get(variant, {})
                sent = c.get("sent", 0)
                entries.append({
                    "variant": variant, "sent": sent, "opened": c.get("opened", 0), "clicked": c.get("clicked", 0),
                    "replied": c.get("replied", 0), "bounced": c.get("bounced", 0),
                    "open_rate": _pct(c.get("opened", 0), sent), "click_rate": _pct(c.get("clicked", 0), sent),
                    "reply_rate": _pct(c.get("replied", 0), sent), "winner": winners.get(n) == variant})
            if entries:
                out[n] = entries
        return out

    # -- links ---------------------------------------------------------------------------------
    async def campaign_link_stats(self, ws: str, cid: str) -> list[dict[str, Any]]:
        """Clicks per link: ``clicks`` counts every click, ``unique_clicks`` the emails whose link
        was clicked at least once (the stats' own unit), most clicked first.

        A link is its rendered URL, so a link personalised with merge tags is one entry per
        recipient. Once a contact is erased, its clicks stay counted under ``url: null``.
        """
        await self._report_campaign(ws, cid)
        lc = link_clicks.c
        rows = await self.reads.all(
            select(lc.url, func.sum(lc.clicks).label("clicks"), func.count(func.distinct(lc.email_id)).label("unique"))
            .where(lc.campaign_id == cid, lc.workspace_id == ws).group_by(lc.url))
        out = [{"url": r["url"], "clicks": int(r["clicks"]), "unique_clicks": int(r["unique"])} for r in rows]
        out.sort(key=lambda item: (-item["clicks"], item["url"] is None, item["url"] or ""))
        return out

    # -- timeline ------------------------------------------------------------------------------
    async def campaign_timeline(self, ws: str, cid: str, *, from_: Any = None, to: Any = None,
                                interval: Any = "day") -> list[dict[str, Any]]:
        """Counts per local hour, day or week. Each email counts once per metric, at the time the
        stats use (first open, first click, first human reply, the bounce); buckets are whole
        (the first one may start before ``from``) and every bucket in range is listed."""
        _, tz = await self._report_campaign(ws, cid)
        p = _Params(tz)
        interval = interval or "day"
        if interval not in INTERVALS:
            p.fail("interval", "interval must be hour, day or week")
        start, end = p.time("from", from_), p.time("to", to)
        if start is not None and end is not None and start > end:
            p.fail("from", "from must not be later than to")
        p.check()
        end = end or self.clock.now()
        if start is None:
            first = await self.stats.first_sent_at(cid)
            if first is None:
                return []
            start = datetime.fromisoformat(first.replace("Z", "+00:00"))
            if start > end:
                return []
        fences = buckets(start, end, tz, interval)
        lo, hi = format_time(fences[0]), format_time(fences[-1])
        # Per-minute counters (``rm_campaign_minutes``): each email once per metric, at the time the
        # stats use; every zone offset in use is a whole number of minutes.
        rows = await self.stats.timeline_minutes(cid, lo, hi)
        starts = fences[:-1]
        counts = [dict.fromkeys(TIMELINE_FIGURES, 0) for _ in starts]
        for r in rows:
            at = datetime.fromisoformat(r["minute"] + ":00+00:00")
            i = bisect_right(starts, at) - 1
            if 0 <= i < len(starts):
                for metric in TIMELINE_FIGURES:
                    counts[i][metric] += int(r[metric])
        return [{"start": format_time(s), **c} for s, c in zip(starts, counts, strict=True)]

    # -- activity ------------------------------------------------------------------------------
    def _campaign_events(self, ws: str, cid: str, contact_id: str | None) -> Any:
        """The condition selecting the campaign's events: its enrollments' streams, and the
        enrollment-time skips (on the campaign's stream) by the positions ``rm_skips`` kept."""
        en, sk = t.enrollments.c, t.skips.c
        streams = select(literal("enrollment-", String) + en.id).where(en.campaign_id == cid, en.workspace_id == ws)
        skips = select(sk.position).where(sk.campaign_id == cid, sk.workspace_id == ws)
        if contact_id is not None:
            streams = streams.where(en.contact_id == contact_id)
            skips = skips.where(sk.contact_id == contact_id)
        return and_(EV.workspace_id == ws, or_(EV.stream.in_(streams), EV.position.in_(skips)))

    async def campaign_activity(self, ws: str, cid: str, *, type: Any = None, contact_id: str | None = None,
                                from_: Any = None, to: Any = None, after: Any = None, limit: Any = None,
                                cursor: Any = None) -> dict[str, Any]:
        """The campaign's email and enrollment events in log order, paged by position.

        ``id`` is the event's log position (an integer); pass the answer's ``next_after`` as
        ``after`` for the next page. ``next_after`` is the last position returned (``after``
        itself on an empty page), so a client can also poll for new activity; ``has_more`` says
        whether a further page exists now. ``type`` takes one type or a comma-separated list.
        ``variant`` is the A/B variant of the item's email (null for a step without variants and
        for enrollment events): the event's own when it names one (``email.sent``, a refusal's
        ``email.bounced``), else the one ``rm_emails`` recorded for that email, so an open, click,
        reply or later bounce shows the variant that was sent.

        ``cursor`` is the same keyset as ``after`` (a position), signed and bound to the campaign
        and to ``type``, ``contact_id``, ``from`` and ``to``: ``pagination.next_cursor`` leads to the
        next page (null on the last), ``pagination.has_more`` repeats ``has_more``.
        """
        _, tz = await self._report_campaign(ws, cid)
        p = _Params(tz)
        known = activity_types()
        types = [x.strip() for x in str(type).split(",") if x.strip()] if type else known
        for x in types:
            if x not in known:
                p.fail("type", f"unknown activity type {x!r}; one of {', '.join(known)}")
        start, end = p.time("from", from_), p.time("to", to)
        pos = p.integer("after", after, 0, 0)
        n = p.integer("limit", limit, 50, 1, MAX_LIMIT)
        if cursor is not None and not isinstance(cursor, str):
            p.fail("cursor", "cursor must be a next_cursor string this listing answered")
        elif cursor and pos:
            p.fail("cursor", "give after or cursor, not both")
        p.check()
        scope = Cursors.scope("activity", ws, {"campaign_id": cid, "type": sorted(set(types)) if type else None,
                                               "contact_id": contact_id or None,
                                               "from": format_time(start) if start else None,
                                               "to": format_time(end) if end else None})
        if cursor:
            key = self.reads.cursors.decode(scope, cursor, 1).key[0]
            if not isinstance(key, int) or key < 0:
                raise cursor_error()
            pos = key
        q = (select(schema.events).where(self._campaign_events(ws, cid, contact_id or None), EV.position > pos,
                                         EV.type.in_(types)).order_by(EV.position).limit(n + 1))
        if start is not None:
            q = q.where(EV.recorded_at >= format_time(start))
        if end is not None:
            q = q.where(EV.recorded_at < format_time(end))
        async with self.store.reading() as conn:
            evs = await self.store.query(q, conn)
            page, more = evs[:n], len(evs) > n
            addresses = await self._contact_emails(ws, [_field(e, "contact_id") for e in page], conn)
            variants = await self._email_variants(ws, [e for e in page if _field(e, "variant") is None], conn)
        state, _ = await self.reads.campaign(ws, cid)
        node_ids = [step.node_id for step in state.definition.steps]
        items = [_activity_item(e, addresses, variants) for e in page]
        for item in items:  # a workflow's email node, where the step came from one
            step = item.get("step")
            item["node_id"] = node_ids[step - 1] if isinstance(step, int) and 0 < step <= len(node_ids) else None
        next_cursor = self.reads.cursors.encode(scope, (page[-1].position,), 0) if more and page else None
        return {"data": items,
                "next_after": page[-1].position if page else pos, "has_more": more,
                "pagination": {"next_cursor": next_cursor, "has_more": more}}

    async def _email_variants(self, ws: str, events: Sequence[StoredEvent], conn: AsyncConnection
                              ) -> dict[str, str]:
        """email_id -> the variant ``rm_emails`` recorded, for the email events in ``events``
        (one indexed read per 400 ids; emails without a variant are left out)."""
        ids = sorted({eid for eid in (_field(e, "email_id") for e in events) if isinstance(eid, str)})
        out: dict[str, str] = {}
        for i in range(0, len(ids), 400):
            for r in await self.reads.all(select(E.email_id, E.variant).where(
                    E.workspace_id == ws, E.email_id.in_(ids[i:i + 400]), E.variant.is_not(None)), conn):
                out[r["email_id"]] = r["variant"]
        return out

    # -- skips ---------------------------------------------------------------------------------
    async def campaign_skips(self, ws: str, cid: str, *, kind: Any = None, limit: Any = None
                             ) -> list[dict[str, Any]]:
        """Contacts not enrolled, or dropped before their first send, latest first. ``rm_skips``
        holds every ``enrollment.skipped``; an enrollment left ``skipped`` by another path is
        added unless a skip row already tells the same story."""
        await self._report_campaign(ws, cid)
        p = _Params(zone("UTC"))
        if kind not in (None, "") and kind not in SKIP_REASONS:
            p.fail("kind", f"kind must be one of {', '.join(SKIP_REASONS)}")
        n = p.integer("limit", limit, 50, 1, MAX_LIMIT)
        p.check()
        sk, en = t.skips.c, t.enrollments.c
        logged = select(sk.contact_id, sk.reason.label("kind"), sk.at, sk.position).where(
            sk.campaign_id == cid, sk.workspace_id == ws)
        same = select(sk.position).where(sk.campaign_id == cid, sk.contact_id == en.contact_id,
                                         sk.reason == en.stop_reason)
        other = select(en.contact_id, func.coalesce(en.stop_reason, "skipped").label("kind"), en.updated_at.label("at"),
                       literal(0).label("position")).where(
            en.campaign_id == cid, en.workspace_id == ws, en.status == "skipped", ~same.exists())
        if kind:
            logged = logged.where(sk.reason == kind)
            other = other.where(en.stop_reason == kind)
        u = union_all(logged, other).subquery()
        rows = await self.reads.all(select(u).order_by(u.c.at.desc(), u.c.position.desc(), u.c.contact_id).limit(n))
        addresses = await self._contact_emails(ws, [r["contact_id"] for r in rows])
        return [{"contact_id": r["contact_id"], "email": addresses.get(r["contact_id"]), "kind": r["kind"],
                 "at": r["at"]} for r in rows]

    # -- replies -------------------------------------------------------------------------------
    async def campaign_replies(self, ws: str, cid: str, *, limit: Any = None) -> list[dict[str, Any]]:
        """Replies, latest first: per email, its first human reply and its first out-of-office
        reply (an email can have both: two entries). The times are those of ``email.replied``
        as recorded, the same as ``rm_emails.replied_at``; ``hours_to_reply`` is counted from
        the email's ``sent_at``."""
        await self._report_campaign(ws, cid)
        p = _Params(zone("UTC"))
        n = p.integer("limit", limit, 50, 1, MAX_LIMIT)
        p.check()
        q = (select(schema.events).where(self._campaign_events(ws, cid, None), EV.type == "email.replied")
             .order_by(EV.position))
        async with self.store.reading() as conn:
            first: dict[tuple[str, bool], StoredEvent] = {}
            for e in await self.store.query(q, conn):
                if isinstance(e.event, EmailReplied):  # the query reads only email.replied
                    first.setdefault((e.event.email_id, bool(e.event.out_of_office)), e)
            ids = sorted({eid for eid, _ in first})
            sent: dict[str, str | None] = {}
            for i in range(0, len(ids), 400):
                for r in await self.reads.all(
                        select(E.email_id, E.sent_at).where(E.email_id.in_(ids[i:i + 400])), conn):
                    sent[r["email_id"]] = r["sent_at"]
            addresses = await self._contact_emails(ws, [_field(e, "contact_id") for e in first.values()], conn)
        out = []
        for (eid, ooo), e in first.items():
            at = e.recorded_at
            sent_at = sent.get(eid)
            hours = None
            if sent_at is not None:
                delta = at - datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
                hours = round(delta.total_seconds() / 3600, 2)
            out.append({"contact_id": _field(e, "contact_id"), "email": addresses.get(_field(e, "contact_id")),
                        "step": _field(e, "step"), "replied_at": format_time(at), "hours_to_reply": hours,
                        "out_of_office": ooo, "enrollment_id": _field(e, "enrollment_id"), "_pos": e.position})
        out.sort(key=lambda r: (r["replied_at"], r["_pos"]), reverse=True)
        for r in out:
            del r["_pos"]
        return out[:n]


def _field(e: StoredEvent, name: str) -> Any:
    return getattr(e.event, name, None)


def _activity_item(e: StoredEvent, addresses: dict[str, str | None], variants: dict[str, str]) -> dict[str, Any]:
    data = to_data(e.event)
    contact_id = data.get("contact_id")
    email_id = data.get("email_id")
    variant = data.get("variant") or (variants.get(email_id) if isinstance(email_id, str) else None)
    return {"id": e.position, "type": e.type, "contact_id": contact_id, "email": addresses.get(contact_id or ""),
            "step": data.get("step"), "at": format_time(e.recorded_at), "enrollment_id": data.get("enrollment_id"),
            "variant": variant,
            "metadata": {k: v for k, v in data.items() if k not in _COMMON and not k.endswith("_enc")}}
