"""Loading the planner's inputs from the read models (shared by tick and forecast).

The tick reads only what can matter now: per (campaign, pinned sender) group, the best-ranked
emails already due (at most what one tick may claim), and the earliest due time of the others;
usage comes from the counters of ``projections/usage.py`` (the buckets that contain `now`, and
each pair's latest send), never from a scan of emails already sent. So a tick's reads do not
grow with the history. The forecast plays the queue forward, but reads of each campaign only the
emails that could go within its horizon (:func:`load_queue`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.domain.definition import CampaignDefinition, definition_from_json
from engine.schedule import CampaignPlan, LastSend, QueueItem, SenderPlan, Usage, Warmup
from events.registry import format_time, parse_time
from projections import tables
from projections import usage as usage_model
from projections.sending import emails

PLANNED_STATUSES = ("active", "scheduled")
QUEUE = emails.c


@dataclass(frozen=True, slots=True)
class PlannerInputs:
    """Everything the pure planner needs, read in one go (under the log's lock when claiming).

    ``cut``: the (campaign, pinned sender) groups that had more due emails than were read, with
    how many were read: a tick that took that many from one of them may have more to send at the
    same instant.
    """

    items: list[QueueItem]
    campaigns: dict[str, CampaignPlan]
    senders: dict[str, SenderPlan]
    usage: Usage
    monthly_limits: dict[str, int | None]
    definitions: dict[str, CampaignDefinition]
    cut: dict[tuple[str, str | None], int] = field(default_factory=dict)

    def exhausted(self, taken: Iterable[QueueItem]) -> bool:
        """Whether the sends `taken` used up a group that was cut short (then more may go now)."""
        counts: dict[tuple[str, str | None], int] = {}
        for item in taken:
            key = (item.campaign_id, item.sender_id)
            counts[key] = counts.get(key, 0) + 1
        return any(counts.get(key, 0) >= limit for key, limit in self.cut.items())


def campaign_plan(row: Any, definition: CampaignDefinition) -> CampaignPlan:
    """What the planner needs of a campaign (``row``: its id and workspace id)."""
    return CampaignPlan(
        campaign_id=row["id"], workspace_id=row["workspace_id"],
        schedule=definition.schedule,
        sender_ids=definition.sender_ids,
        step_delays=tuple(step.delay for step in definition.steps),
        active=True,
    )


_PARSED: dict[tuple[str, str], tuple[CampaignDefinition, CampaignPlan]] = {}


def parsed_campaign(row: Any) -> tuple[CampaignDefinition, CampaignPlan]:
    """The row's definition and plan, parsed once per definition text (ticks run many times a second)."""
    key = (row["id"], row["definition"])
    found = _PARSED.get(key)
    if found is None:
        if len(_PARSED) > 4096:
            _PARSED.clear()
        definition = definition_from_json(row["definition"])
        found = _PARSED[key] = (definition, campaign_plan(row, definition))
    return found


async def _campaigns(conn: AsyncConnection, workspace_id: str | None
                     ) -> tuple[dict[str, CampaignDefinition], dict[str, CampaignPlan]]:
    c = tables.campaigns.c
    query = select(c.id, c.workspace_id, c.definition).where(c.status.in_(PLANNED_STATUSES), c.deleted.is_(False))
    if workspace_id is not None:
        query = query.where(c.workspace_id == workspace_id)
    definitions: dict[str, CampaignDefinition] = {}
    plans: dict[str, CampaignPlan] = {}
    for row in (await conn.execute(query)).mappings():
        definitions[row["id"]], plans[row["id"]] = parsed_campaign(row)
    return definitions, plans


async def senders_and_limits(conn: AsyncConnection, workspaces: list[str]
                              ) -> tuple[dict[str, SenderPlan], dict[str, int | None]]:
    s = tables.senders.c
    rows = (await conn.execute(select(s.id, s.daily_limit, s.daily_limit_variation_pct, s.status, s.removed,
                                      s.warmup).where(s.workspace_id.in_(workspaces)))).mappings().all()
    warming = [r["id"] for r in rows if r["warmup"]]
    first_days: dict[str, str] = {}
    if warming:  # a warm-up counts its days from the sender's first send day
        counts = usage_model.counts.c
        first_days = dict((await conn.execute(select(counts.owner, func.min(counts.bucket)).where(
            counts.scope == usage_model.SENDER_DAY, counts.owner.in_(warming), counts.sends > 0)
            .group_by(counts.owner))).all())
    senders = {r["id"]: SenderPlan(sender_id=r["id"], daily_limit=r["daily_limit"],
                                   daily_limit_variation_pct=float(r["daily_limit_variation_pct"]),
                                   active=r["status"] == "active" and not r["removed"],
                                   warmup=Warmup.from_dict(json.loads(r["warmup"]) if r["warmup"] else None),
                                   first_send_day=date.fromisoformat(first_days[r["id"]])
                                   if r["id"] in first_days else None)
               for r in rows}
    w = tables.workspaces.c
    monthly = {r[0]: r[1] for r in (await conn.execute(select(w.id, w.monthly_limit).where(w.id.in_(workspaces))))}
    return senders, monthly


async def load_usage(conn: AsyncConnection, now: datetime, campaigns: dict[str, CampaignPlan],
                     sender_ids: list[str], workspaces: list[str]) -> Usage:
    """The usage the planner needs at `now` and later, from the counters.

    Buckets that ended before `now` are left out (a bucket from two days back on): the planner
    never asks about them except to find that a slot already passed, which it then searches again
    from `now` (see ``engine/schedule/_core.py``), so they cannot change a decision.
    """
    utc_now = now.astimezone(UTC)
    counts = usage_model.counts.c
    since_day = (utc_now.date() - timedelta(days=2)).isoformat()
    since_hour = format_time(utc_now - timedelta(hours=2))
    month = f"{utc_now.year:04d}-{utc_now.month:02d}"
    wanted = [and_(counts.scope == usage_model.SENDER_DAY, counts.owner.in_(sender_ids), counts.bucket >= since_day),
              and_(counts.scope == usage_model.WORKSPACE_MONTH, counts.owner.in_(workspaces),
                   counts.bucket >= month)]
    if campaigns:
        wanted += [and_(counts.scope == usage_model.CAMPAIGN_DAY, counts.owner.in_(list(campaigns)),
                        counts.bucket >= since_day),
                   and_(counts.scope == usage_model.CAMPAIGN_HOUR, counts.owner.in_(list(campaigns)),
                        counts.bucket >= since_hour)]
    if any(_domain_limited(plan) for plan in campaigns.values()):  # per recipient domain: only when asked for
        wanted += [and_(counts.scope == usage_model.DOMAIN_DAY, counts.bucket >= since_day),
                   and_(counts.scope == usage_model.DOMAIN_HOUR, counts.bucket >= since_hour)]
    sender_days: dict[tuple[str, date], int] = {}
    campaign_days: dict[tuple[str, date], int] = {}
    campaign_hours: dict[tuple[str, datetime], int] = {}
    months: dict[tuple[str, int, int], int] = {}
    domain_hours: dict[tuple[str, str, datetime], int] = {}
    domain_days: dict[tuple[str, str, date], int] = {}
    senders_wanted = set(sender_ids)
    for scope, owner, bucket, sends in (await conn.execute(
            select(counts.scope, counts.owner, counts.bucket, counts.sends).where(or_(*wanted)))).all():
        if not sends:
            continue
        if scope == usage_model.SENDER_DAY:
            sender_days[(owner, date.fromisoformat(bucket))] = sends
        elif scope == usage_model.CAMPAIGN_DAY:
            campaign_days[(owner, date.fromisoformat(bucket))] = sends
        elif scope == usage_model.CAMPAIGN_HOUR:
            campaign_hours[(owner, parse_time(bucket))] = sends
        elif scope in (usage_model.DOMAIN_HOUR, usage_model.DOMAIN_DAY):
            sender_id, _, domain = owner.partition("|")
            if sender_id not in senders_wanted:
                continue
            if scope == usage_model.DOMAIN_HOUR:
                domain_hours[(sender_id, domain, parse_time(bucket))] = sends
            else:
                domain_days[(sender_id, domain, date.fromisoformat(bucket))] = sends
        else:
            months[(owner, int(bucket[:4]), int(bucket[5:7]))] = sends
    last_sends: dict[tuple[str, str], LastSend] = {}
    last_senders: dict[str, str] = {}
    if campaigns:
        last = usage_model.last_sends.c
        for campaign_id, sender_id, at, local_day, seq in (await conn.execute(
                select(last.campaign_id, last.sender_id, last.at, last.local_day, last.seq)
                .where(last.campaign_id.in_(list(campaigns))))).all():
            last_sends[(campaign_id, sender_id)] = LastSend(parse_time(at), date.fromisoformat(local_day), seq)
        turn = usage_model.rotation.c
        last_senders = dict((await conn.execute(select(turn.campaign_id, turn.sender_id)
                                                .where(turn.campaign_id.in_(list(campaigns))))).all())
    return Usage(sender_days, campaign_days, campaign_hours, months, last_sends, last_senders, domain_hours,
                 domain_days)


def _item(row: Any, contact_timezone: str | None, domain: str | None = None) -> QueueItem:
    return QueueItem(email_id=row["email_id"], enrollment_id=row["enrollment_id"], campaign_id=row["campaign_id"],
                     contact_id=row["contact_id"], step=row["step"], due_at=parse_time(row["due_at"]),
                     priority=row["priority"], seq=row["seq"], sender_id=row["sender_id"],
                     contact_timezone=contact_timezone, domain=domain)


def _domain_limited(plan: CampaignPlan) -> bool:
    return plan.schedule.max_per_domain_per_hour is not None or plan.schedule.max_per_domain_per_day is not None


_ITEM_COLUMNS = (QUEUE.email_id, QUEUE.enrollment_id, QUEUE.campaign_id, QUEUE.contact_id, QUEUE.step, QUEUE.due_at,
                 QUEUE.priority, QUEUE.seq, QUEUE.sender_id)
_RANK = (QUEUE.priority.desc(), QUEUE.due_at, QUEUE.seq, QUEUE.enrollment_id, QUEUE.step, QUEUE.email_id)


async def load_inputs(conn: AsyncConnection, now: datetime, workspace_id: str | None = None) -> PlannerInputs:
    """Every queued email of the planned campaigns, with their plans, senders and usage."""
    definitions, campaigns, senders, monthly = await load_plans(conn, workspace_id)
    items = await load_queue(conn, campaigns)
    usage = await load_usage(conn, now, campaigns, list(senders), sorted({c.workspace_id for c in campaigns.values()}))
    return PlannerInputs(items, campaigns, senders, usage, monthly, definitions)


async def load_plans(conn: AsyncConnection, workspace_id: str | None = None
                     ) -> tuple[dict[str, CampaignDefinition], dict[str, CampaignPlan], dict[str, SenderPlan],
                                dict[str, int | None]]:
    """(definitions, plans) of the planned campaigns, their workspaces' senders and monthly limits:
    what a forecast needs before it decides how much of each queue to read."""
    definitions, campaigns = await _campaigns(conn, workspace_id)
    senders, monthly = await senders_and_limits(conn, sorted({c.workspace_id for c in campaigns.values()}))
    return definitions, campaigns, senders, monthly


async def load_queue(conn: AsyncConnection, campaigns: dict[str, CampaignPlan],
                     most_sends: dict[str, int] | None = None) -> list[QueueItem]:
    """The scheduled emails of `campaigns`: every one, or for a campaign in `most_sends` only those
    that may be among its next ``most_sends[id]`` sends (an upper bound the caller computed).

    The planner takes from a pool (campaign, pinned sender, window zone) the best-ranked email
    already due, and the rank is (priority, due_at, seq, ...). So within one pool and one
    priority an email goes only after every email ranked before it there, all of them due no
    later than it is: with at most K sends, only each (campaign, pin, contact timezone,
    priority)'s first K by (due time, seq) can go (emails tied with the K-th on both all
    included, since the rank breaks those ties on the ids). Both order the same in SQL and in
    Python whatever the collation: a fixed-width time text and an integer. A campaign under
    per-domain limits is read whole: its pools
    may skip an email whose domain is full, so that argument does not hold there.
    """
    if not campaigns:
        return []
    most_sends = {c: n for c, n in (most_sends or {}).items() if c in campaigns and not _domain_limited(campaigns[c])}
    k = tables.contacts.c
    columns = (*_ITEM_COLUMNS, k.timezone, k.email_domain)
    joined = emails.join(tables.contacts, k.id == QUEUE.contact_id)
    queued = QUEUE.status == "scheduled"
    whole = [c for c in campaigns if c not in most_sends]
    rows: list[Any] = []
    if whole:
        rows += (await conn.execute(select(*columns).select_from(joined)
                                    .where(queued, QUEUE.campaign_id.in_(whole)))).mappings().all()
    for campaign_id, most in most_sends.items():
        if not campaigns[campaign_id].schedule.use_contact_timezone:
            # one window zone for every email: rank the queue alone, join the contacts of the first K only
            place = func.rank().over(partition_by=(QUEUE.sender_id, QUEUE.priority), order_by=(QUEUE.due_at, QUEUE.seq))
            first = (select(QUEUE.email_id.label("first_id"), place.label("place"))
                     .where(queued, QUEUE.campaign_id == campaign_id).subquery())
            kept = first.join(joined, QUEUE.email_id == first.c.first_id)
            rows += (await conn.execute(select(*columns).select_from(kept)
                                        .where(first.c.place <= most))).mappings().all()
            continue
        place = func.rank().over(partition_by=(QUEUE.sender_id, k.timezone, QUEUE.priority),
                                 order_by=(QUEUE.due_at, QUEUE.seq))
        ranked = (select(*columns, place.label("place")).select_from(joined)
                  .where(queued, QUEUE.campaign_id == campaign_id).subquery())
        rows += (await conn.execute(select(*(ranked.c[column.name] for column in columns))
                                    .where(ranked.c.place <= most))).mappings().all()
    return [_item(row, row["timezone"], row["email_domain"]) for row in rows]


async def queued_by_step(conn: AsyncConnection, campaign_id: str) -> dict[int, int]:
    """How many emails of each step a campaign has scheduled (counted, not loaded)."""
    return {int(step): int(n) for step, n in (await conn.execute(
        select(QUEUE.step, func.count()).where(QUEUE.status == "scheduled", QUEUE.campaign_id == campaign_id)
        .group_by(QUEUE.step))).all()}


def _pins(plan: CampaignPlan, senders: dict[str, SenderPlan]) -> list[str | None]:
    """The groups a campaign's queue can send from now: unpinned, and pinned to an active sender of it."""
    active = [s for s in dict.fromkeys(plan.sender_ids) if s in senders and senders[s].active]
    return [None, *active]


def _zero_spacing(plan: CampaignPlan) -> bool:
    spec = plan.schedule
    return spec.cron is None and spec.every_minutes is None and spec.max_wait_seconds == 0


async def load_due(conn: AsyncConnection, now: datetime, budget: int, hold: frozenset[str] = frozenset()
                   ) -> PlannerInputs:
    """What one tick may send at `now`, reading no more than that.

    Per (campaign, pinned sender) group: the best-ranked emails due at `now`, as many as the tick
    could take from that group (one per sender and instant, or `budget` when the campaign has no
    spacing), plus one more to tell whether the group was cut short; and a placeholder carrying
    the earliest due time of the group's later emails, from which ``next_due_at`` is exact.
    Campaigns read in the contact's timezone or under per-domain limits are read whole (their
    groups depend on the contact), which is the one read here that grows with the queue.
    """
    definitions, campaigns = await _campaigns(conn, None)
    workspaces = sorted({c.workspace_id for c in campaigns.values()})
    senders, monthly = await senders_and_limits(conn, workspaces)
    items: list[QueueItem] = []
    cut: dict[tuple[str, str | None], int] = {}
    now_text = format_time(now)
    base = QUEUE.status == "scheduled"
    for campaign_id, plan in campaigns.items():
        in_campaign = and_(base, QUEUE.campaign_id == campaign_id)
        if plan.schedule.use_contact_timezone or _domain_limited(plan):
            items.extend(await _whole_groups(conn, in_campaign, now_text, hold))
            continue
        pins = _pins(plan, senders)
        active = len(pins) - 1
        if not active:
            continue
        per_pair = budget if _zero_spacing(plan) else 1
        due_parts: list[Any] = []
        next_parts: list[Any] = []
        for pin in pins:
            pinned = QUEUE.sender_id.is_(None) if pin is None else QUEUE.sender_id == pin
            limit = (min(budget, per_pair * active) if pin is None else per_pair) + 1
            due_parts.append(select(*_ITEM_COLUMNS).where(in_campaign, pinned, QUEUE.due_at <= now_text)
                             .order_by(*_RANK).limit(limit).subquery().select())
            next_parts.append(select(literal(len(next_parts)).label("pin"), func.min(QUEUE.due_at).label("due_at"))
                              .where(in_campaign, pinned, QUEUE.due_at > now_text))
        rows = (await conn.execute(due_parts[0].union_all(*due_parts[1:]) if len(due_parts) > 1
                                   else due_parts[0])).mappings().all()
        counted: dict[str | None, int] = {}
        for row in rows:
            counted[row["sender_id"]] = counted.get(row["sender_id"], 0) + 1
            if row["email_id"] not in hold:
                items.append(_item(row, None))
        for pin, n in counted.items():
            limit = min(budget, per_pair * active) if pin is None else per_pair
            if n > limit and per_pair > 1:  # with spacing, every pair already had its one send of the instant
                cut[(campaign_id, pin)] = limit
        for index, due_at in (await conn.execute(next_parts[0].union_all(*next_parts[1:]))).all():
            if due_at is not None:
                items.append(_placeholder(campaign_id, pins[int(index)], parse_time(due_at), None))
    usage = await load_usage(conn, now, campaigns, list(senders), workspaces)
    return PlannerInputs(items, campaigns, senders, usage, monthly, definitions, cut)


async def _whole_groups(conn: AsyncConnection, in_campaign: Any, now_text: str, hold: frozenset[str]
                       ) -> list[QueueItem]:
    """Every due email of a campaign whose groups depend on each contact (its timezone, or its
    domain under per-domain limits), and each (pin, zone)'s earliest later one."""
    k = tables.contacts.c
    joined = tables.contacts.join(emails, k.id == QUEUE.contact_id)
    due = (await conn.execute(select(*_ITEM_COLUMNS, k.timezone, k.email_domain).select_from(joined)
                              .where(in_campaign, QUEUE.due_at <= now_text))).mappings().all()
    items = [_item(row, row["timezone"], row["email_domain"]) for row in due if row["email_id"] not in hold]
    later = (await conn.execute(select(QUEUE.campaign_id, QUEUE.sender_id, k.timezone, func.min(QUEUE.due_at))
                                .select_from(joined).where(in_campaign, QUEUE.due_at > now_text)
                                .group_by(QUEUE.campaign_id, QUEUE.sender_id, k.timezone))).all()
    items += [_placeholder(campaign_id, pin, parse_time(due_at), zone) for campaign_id, pin, zone, due_at in later]
    return items


PLACEHOLDER = "~later~"


def _placeholder(campaign_id: str, pin: str | None, due_at: datetime, zone: str | None) -> QueueItem:
    """Stands for a group's emails not yet due: only its due time and group matter (to next_due_at)."""
    return QueueItem(email_id=f"{PLACEHOLDER}{campaign_id}~{pin or ''}~{zone or ''}", enrollment_id=PLACEHOLDER,
                     campaign_id=campaign_id, contact_id=PLACEHOLDER, step=0, due_at=due_at, sender_id=pin,
                     contact_timezone=zone)


def is_placeholder(item: QueueItem) -> bool:
    return item.enrollment_id == PLACEHOLDER
