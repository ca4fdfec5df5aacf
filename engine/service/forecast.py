"""Forecasts: the planner run forward in simulated time on an in-memory copy of the queue.

Two things keep a forecast cheap on a large queue:

- of each campaign's queue it reads only the emails that may go within the horizon
  (:func:`most_sends` bounds a campaign's sends from its limits; ``load_queue`` reads each pool's
  first that many), and counts the rest;
- a result is kept per (workspace, campaign, days, what-if) with the workspace's log position,
  and served again while nothing was appended to the workspace's log and the clock has not
  reached the first send the forecast predicted (before it, a forecast from any later instant
  plays exactly the same rounds: nothing can go earlier, and the state is the same).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import func, select

from engine.clock import Clock
from engine.domain.definition import StepDefinition
from engine.domain.variants import VariantCounts, choose_variant, pick_winner
from engine.errors import ValidationFailed
from engine.schedule import CampaignPlan, QueueItem, SenderPlan, Usage, forecast_by_day, forecast_range, simulate
from engine.schedule.simulate import SimulatedSend
from engine.schedule.tzutil import local_date, zone
from engine.schedule.windows import Window, window_for
from engine.service.base import Reads
from engine.service.planner_inputs import (
    campaign_plan,
    load_plans,
    load_queue,
    load_usage,
    queued_by_step,
    senders_and_limits,
)
from engine.service.variants import by_step_and_variant, variant_counts_query
from events import schema
from events.registry import parse_time
from events.store import EventStore

CACHE_SIZE = 256  # forecasts kept (one per workspace, campaign, days and what-if)


def _days(days: Any) -> int:
    try:
        n = int(days)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= 90:
        raise ValidationFailed([{"field": "days", "message": "days must be between 1 and 90"}])
    return n


WHAT_IF = ("daily_limit", "max_per_hour", "every_minutes", "senders_add", "as_if")


def _what_if(values: dict[str, Any]) -> dict[str, Any]:
    """Validate what-if parameters: positive integers, and ``as_if`` only ``launched``."""
    errors: list[dict[str, str]] = []
    found: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in WHAT_IF:
            errors.append({"field": key, "message": "unknown what-if parameter"})
        elif key == "as_if":
            if value != "launched":
                errors.append({"field": key, "message": "as_if takes only 'launched'"})
            else:
                found[key] = value
        else:
            try:
                number = int(value)
            except (TypeError, ValueError):
                number = -1
            low = 0 if key == "senders_add" else 1
            high = 100 if key == "senders_add" else (1440 if key == "every_minutes" else 1_000_000)
            if not low <= number <= high:
                errors.append({"field": key, "message": f"must be an integer from {low} to {high}"})
            else:
                found[key] = number
    if errors:
        raise ValidationFailed(errors)
    return found


def with_variants(sends: Sequence[SimulatedSend], steps: Sequence[StepDefinition], winners: Mapping[int, str],
                  counts: Mapping[int, Mapping[str, Mapping[str, int]]]) -> list[SimulatedSend]:
    """One campaign's predicted sends (in order) with the A/B variant each will be sent with.

    The tick's own rule, played forward: each email gets :func:`choose_variant` of its step, with
    the step's recorded winner if any. A tick composes every email with the winners known when it
    starts, and decides a step's winner after recording its sends; so here each round of sends
    (one ``at``, one tick) uses the winners known before it, and after it the steps with a
    ``winner`` rule and none yet are judged by :func:`pick_winner` on ``counts`` (step -> variant
    -> sent/opened/clicked/replied so far, as ``rm_emails`` has them) plus the round's sends, each
    counted as sent and not (yet) engaged, as the forecast assumes.
    """
    decided = dict(winners)
    tally = {step: {variant: dict(found) for variant, found in per_step.items()} for step, per_step in counts.items()}
    out: list[SimulatedSend] = []
    for _, round_sends in groupby(sends, key=lambda send: send.at):
        judged: set[int] = set()
        for send in round_sends:
            step = steps[send.step - 1] if 1 <= send.step <= len(steps) else StepDefinition()
            variant = choose_variant(step, send.enrollment_id, send.step, decided.get(send.step))
            out.append(send if variant is None else dataclasses.replace(send, variant=variant))
            if variant is not None and step.winner is not None and send.step not in decided:
                found = tally.setdefault(send.step, {}).setdefault(variant, {})
                found["sent"] = found.get("sent", 0) + 1
                judged.add(send.step)
        for number in sorted(judged):
            won = pick_winner(steps[number - 1], [
                VariantCounts(variant, found.get("sent", 0), found.get("opened", 0), found.get("clicked", 0),
                              found.get("replied", 0)) for variant, found in tally[number].items()])
            if won is not None:
                decided[number] = won[0]
    return out


def most_sends(plan: CampaignPlan, senders: Mapping[str, SenderPlan], now: datetime, until: datetime) -> int | None:
    """An upper bound on the emails campaign `plan` can send from `now` to `until`, or None.

    Every send counts against a sender's daily limit (UTC days; a warm-up never goes above its
    target) and against the campaign's own daily and hourly limits, whatever else is queued; so
    the smallest of those totals over the horizon bounds the campaign's sends. Only days on which
    the campaign's window opens count (in the contacts' zones, every day). None when nothing
    bounds them (a sender without a limit and no campaign limit).
    """
    active = [senders[s] for s in dict.fromkeys(plan.sender_ids) if s in senders and senders[s].active]
    if not active:
        return 0
    start, end = now.astimezone(UTC), until.astimezone(UTC)
    spec = plan.schedule
    utc_days = (end.date() - start.date()).days + 1
    local_days = utc_days + 1  # local days, in whatever zone: one more than the UTC days at most
    if not spec.use_contact_timezone:  # one window: count only the days it opens within the horizon
        utc_days, local_days = _open_days(window_for(spec), start, end)
    bounds: list[int] = []
    per_day = [s.daily_limit if s.daily_limit is not None else (s.warmup.target if s.warmup else None)
               for s in active]
    if all(limit is not None for limit in per_day):
        bounds.append(sum(max(0, limit or 0) for limit in per_day) * utc_days)
    if spec.daily_limit is not None:
        bounds.append(max(0, spec.daily_limit) * local_days)
    if spec.max_per_hour is not None:  # hours counted from local hour starts: at most two partial ones
        bounds.append(max(0, spec.max_per_hour) * (int((end - start) / timedelta(hours=1)) + 2))
    return min(bounds) if bounds else None


def _simulate(now: datetime, until: datetime, items: list[QueueItem], campaigns: Mapping[str, CampaignPlan],
              senders: Mapping[str, SenderPlan], usage: Usage, monthly: Mapping[str, int | None]
              ) -> list[SimulatedSend]:
    """:func:`simulate` with the cyclic garbage collector paused: it allocates tens of thousands of
    small objects that live to the end, which made the collector walk them again and again (about
    a sixth of the time). Nothing else runs meanwhile: the simulation is one synchronous call."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return simulate(now, until, items, campaigns, senders, usage, monthly)
    finally:
        if enabled:
            gc.enable()


def _open_days(window: Window, start: datetime, end: datetime) -> tuple[int, int]:
    """(UTC days, local days) on which `window` is open at some moment of [start, end]."""
    local = zone(window.timezone)
    utc_days: set[date] = set()
    local_days = 0
    day = local_date(start, local) - timedelta(days=1)
    while day <= local_date(end, local):
        bounds = window.bounds(day)
        if bounds is not None and bounds[1] > start and bounds[0] <= end:
            local_days += 1
            first, last = max(bounds[0], start), min(bounds[1] - timedelta(microseconds=1), end)
            utc_days.update(first.date() + timedelta(days=n) for n in range((last.date() - first.date()).days + 1))
        day += timedelta(days=1)
    return len(utc_days), local_days


@dataclasses.dataclass(frozen=True, slots=True)
class _Kept:
    """A forecast as computed at `at`, for the workspace's log at `position`.

    It holds while the log is there and the clock is at `at` or in (at, first_send) (with no
    send in the horizon, on the same first local day); `exact_instant` (as_if launched, whose draft emails
    are due at `at` itself) holds it at `at` only.
    """

    position: int
    at: datetime
    first_send: datetime | None
    start: date
    tz: str
    exact_instant: bool
    result: dict[str, Any]

    def holds(self, position: int, now: datetime, days: int) -> bool:
        if position != self.position or now < self.at or (self.exact_instant and now != self.at):
            return False
        if now != self.at and self.first_send is not None and now >= self.first_send:
            return False  # a send was due by now and none was recorded: play from now
        return forecast_range(now, self.tz, days)[0] == self.start


class ForecastService:
    """Forecasts of a campaign or a workspace: the planner run forward in simulated time."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reads = Reads(store)
        self._kept: OrderedDict[tuple[Any, ...], _Kept] = OrderedDict()

    async def _position(self, conn: Any, ws: str) -> int:
        """The workspace's last log position (every event the forecast depends on is the workspace's)."""
        events = schema.events.c
        found = (await conn.execute(select(func.max(events.position)).where(events.workspace_id == ws))).scalar()
        return int(found or 0)

    async def _cached(self, key: tuple[Any, ...], days: int) -> dict[str, Any] | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        async with self.store.reading() as conn:
            position = await self._position(conn, key[0])
        if not kept.holds(position, self.clock.now(), days):
            return None
        self._kept.move_to_end(key)
        return copy.deepcopy(kept.result)

    def _keep(self, key: tuple[Any, ...], kept: _Kept) -> None:
        self._kept[key] = kept
        self._kept.move_to_end(key)
        while len(self._kept) > CACHE_SIZE:
            self._kept.popitem(last=False)

    async def forecast(self, ws: str, cid: str, days: int = 7, **what_if: Any) -> dict[str, Any]:
        """Emails per local day from today if nothing but time happens; every campaign sharing
        the senders is simulated together, since they compete for the same limits.

        What-if parameters change nothing stored: ``daily_limit``, ``max_per_hour`` and
        ``every_minutes`` replace the campaign schedule's; ``senders_add`` adds that many senders
        like the campaign's first; ``as_if=launched`` forecasts a draft or paused campaign as if
        launched or resumed now. ``estimated_completion`` is the local day of the campaign's last
        email if every queued one goes within the horizon, else null. Each day's ``by_variant``
        says which A/B variant each email of a step with variants will use (:func:`with_variants`).
        A workspace whose log has not moved answers from the forecast kept at its last call.
        """
        n = _days(days)
        changes = _what_if(what_if)
        key = (ws, cid, n, tuple(sorted(changes.items())))
        found = await self._cached(key, n)
        if found is not None:
            return found
        state, _ = await self.reads.campaign(ws, cid)
        tz = state.definition.schedule.timezone
        now = self.clock.now()
        start, until = forecast_range(now, tz, n)
        as_if = False
        async with self.store.reading() as conn:
            position = await self._position(conn, ws)  # before the reads: a later append only makes it stale
            definitions, campaigns, senders, monthly = await load_plans(conn, ws)
            # the definition the tick composes with (winners included), else a draft's own
            definition = definitions.get(cid) or state.definition
            winners = {**dict(state.variant_winners), **definition.winners()}
            steps = definition.steps
            counts: dict[int, dict[str, dict[str, int]]] = {}
            if any(step.winner is not None and step.variants and number not in winners
                   for number, step in enumerate(steps, start=1)):
                counts = by_step_and_variant((await conn.execute(variant_counts_query(cid))).mappings())
            extra: list[QueueItem] = []
            if changes.get("as_if") == "launched" and cid not in campaigns and state.status in ("draft", "paused"):
                as_if = True
                campaigns[cid] = campaign_plan({"id": cid, "workspace_id": ws}, state.definition)
                extra = await self._unlaunched_items(conn, cid, now, state.status)
                more_senders, more_monthly = await senders_and_limits(conn, [ws])
                senders = {**more_senders, **senders}
                monthly.update(more_monthly)
            if cid in campaigns:
                campaigns[cid] = self._changed_plan(campaigns[cid], senders, changes)
            bounds = {c: bound for c, plan in campaigns.items() if c not in (cid if as_if else ())
                      and (bound := most_sends(plan, senders, now, until)) is not None}
            items = await load_queue(conn, {c: p for c, p in campaigns.items() if not (as_if and c == cid)}, bounds)
            items += extra
            usage = await load_usage(conn, now, campaigns, list(senders), [ws] if campaigns else [])
            if as_if:
                queued: dict[int, int] = {}
                for item in extra:
                    queued[item.step] = queued.get(item.step, 0) + 1
            else:
                queued = await queued_by_step(conn, cid) if cid in campaigns else {}
        sends = _simulate(now, until, items, campaigns, senders, usage, monthly)
        mine = with_variants([s for s in sends if s.campaign_id == cid], steps, winners, counts)
        by_day = forecast_by_day(mine, tz, start, n, with_variants=True)
        remaining = sum((len(steps) - step + 1) * count for step, count in queued.items())
        completion = None
        if remaining and len(mine) >= remaining:
            completion = local_date(max(s.at for s in mine), zone(tz)).isoformat()
        result = {"timezone": tz, "days": by_day, "total": sum(d["count"] for d in by_day),
                  "estimated_completion": completion, **({"what_if": changes} if changes else {})}
        self._keep(key, _Kept(position, now, min((s.at for s in sends), default=None), start, tz, as_if,
                              copy.deepcopy(result)))
        return result

    @staticmethod
    def _changed_plan(plan: CampaignPlan, senders: dict[str, SenderPlan], changes: dict[str, Any]) -> CampaignPlan:
        schedule = plan.schedule
        replaced: dict[str, Any] = {key: changes[key] for key in ("daily_limit", "max_per_hour", "every_minutes")
                                    if key in changes}
        if "every_minutes" in replaced:
            replaced["cron"] = None  # cron wins over every_minutes: the what-if asks for the interval
        if replaced:
            schedule = dataclasses.replace(schedule, **replaced)
        sender_ids = plan.sender_ids
        extra = changes.get("senders_add", 0)
        if extra and plan.sender_ids and plan.sender_ids[0] in senders:
            model = senders[plan.sender_ids[0]]
            added = [f"what-if-{number}" for number in range(1, extra + 1)]
            for sender_id in added:
                senders[sender_id] = dataclasses.replace(model, sender_id=sender_id, first_send_day=None)
            sender_ids = (*plan.sender_ids, *added)
        return dataclasses.replace(plan, schedule=schedule, sender_ids=sender_ids)

    async def _unlaunched_items(self, conn: Any, cid: str, now: datetime, status: str) -> list[QueueItem]:
        """A draft's pending enrollments as if their first step were scheduled now (a paused
        campaign's queue is already there: load_inputs leaves it out only for its status)."""
        from sqlalchemy import select

        from engine.service.planner_inputs import QUEUE
        from projections import tables

        if status == "paused":
            k = tables.contacts.c
            rows = (await conn.execute(select(QUEUE.email_id, QUEUE.enrollment_id, QUEUE.campaign_id, QUEUE.contact_id,
                                              QUEUE.step, QUEUE.due_at, QUEUE.priority, QUEUE.seq, QUEUE.sender_id,
                                              k.timezone, k.email_domain)
                                       .join(tables.contacts, k.id == QUEUE.contact_id)
                                       .where(QUEUE.campaign_id == cid, QUEUE.status == "scheduled"))).mappings()
            return [QueueItem(email_id=r["email_id"], enrollment_id=r["enrollment_id"], campaign_id=cid,
                              contact_id=r["contact_id"], step=r["step"], due_at=max(parse_time(r["due_at"]), now),
                              priority=r["priority"], seq=r["seq"], sender_id=r["sender_id"],
                              contact_timezone=r["timezone"], domain=r["email_domain"]) for r in rows]
        e, k = tables.enrollments.c, tables.contacts.c
        rows = (await conn.execute(select(e.id, e.contact_id, e.seq, e.priority, k.timezone, k.email_domain)
                                   .join(tables.contacts, k.id == e.contact_id)
                                   .where(e.campaign_id == cid, e.status == "pending"))).mappings()
        return [QueueItem(email_id=f"{r['id']}.1", enrollment_id=r["id"], campaign_id=cid, contact_id=r["contact_id"],
                          step=1, due_at=now, priority=r["priority"] or 0, seq=r["seq"] or 0,
                          contact_timezone=r["timezone"], domain=r["email_domain"]) for r in rows]

    async def workspace_forecast(self, ws: str, days: int = 7) -> dict[str, Any]:
        """Emails per UTC day of every planned campaign of the workspace (kept like :meth:`forecast`)."""
        n = _days(days)
        key = (ws, None, n, ())
        found = await self._cached(key, n)
        if found is not None:
            return found
        now = self.clock.now()
        start, until = forecast_range(now, "UTC", n)
        async with self.store.reading() as conn:
            position = await self._position(conn, ws)
            _, campaigns, senders, monthly = await load_plans(conn, ws)
            bounds = {c: bound for c, plan in campaigns.items()
                      if (bound := most_sends(plan, senders, now, until)) is not None}
            items = await load_queue(conn, campaigns, bounds)
            usage = await load_usage(conn, now, campaigns, list(senders), [ws] if campaigns else [])
        sends = _simulate(now, until, items, campaigns, senders, usage, monthly)
        by_day = forecast_by_day(sends, "UTC", start, n)
        result = {"timezone": "UTC", "days": by_day, "total": sum(d["count"] for d in by_day)}
        self._keep(key, _Kept(position, now, min((s.at for s in sends), default=None), start, "UTC", False,
                              copy.deepcopy(result)))
        return result
