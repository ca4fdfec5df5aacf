"""Forecasts: the planner run forward in simulated time on an in-memory copy of the queue."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from engine.clock import Clock
from engine.domain.variants import VariantCounts, choose_variant, pick_winner
from engine.errors import ValidationFailed
from engine.schedule import CampaignPlan, QueueItem, SenderPlan, forecast_by_day, forecast_range, simulate
from engine.schedule.simulate import SimulatedSend
from engine.schedule.tzutil import local_date, zone
from engine.service.base import Reads
from engine.service.planner_inputs import campaign_plan, load_inputs, senders_and_limits
from engine.service.variants import by_step_and_variant, variant_counts_query, winners_of
from events.registry import parse_time
from events.store import EventStore


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


def with_variants(sends: Sequence[SimulatedSend], steps: Sequence[Mapping[str, Any]], winners: Mapping[int, str],
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
            step = steps[send.step - 1] if 1 <= send.step <= len(steps) else {}
            variant = choose_variant(step, send.enrollment_id, send.step, decided.get(send.step))
            out.append(dataclasses.replace(send, variant=variant))
            if variant is not None and step.get("winner") and send.step not in decided:
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


class ForecastService:
    """Forecasts of a campaign or a workspace: the planner run forward in simulated time."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reads = Reads(store)

    async def forecast(self, ws: str, cid: str, days: int = 7, **what_if: Any) -> dict[str, Any]:
        """Emails per local day from today if nothing but time happens; every campaign sharing
        the senders is simulated together, since they compete for the same limits.

        What-if parameters change nothing stored: ``daily_limit``, ``max_per_hour`` and
        ``every_minutes`` replace the campaign schedule's; ``senders_add`` adds that many senders
        like the campaign's first; ``as_if=launched`` forecasts a draft or paused campaign as if
        launched or resumed now. ``estimated_completion`` is the local day of the campaign's last
        email if every queued one goes within the horizon, else null. Each day's ``by_variant``
        says which A/B variant each email of a step with variants will use (:func:`with_variants`).
        """
        n = _days(days)
        changes = _what_if(what_if)
        state, _ = await self.reads.campaign(ws, cid)
        tz = (state.definition.get("schedule") or {}).get("timezone") or "UTC"
        now = self.clock.now()
        async with self.store.reading() as conn:
            inputs = await load_inputs(conn, now, workspace_id=ws)
            # the definition the tick composes with (winners included), else a draft's own
            definition = inputs.definitions.get(cid) or state.definition
            winners = {**dict(state.variant_winners), **winners_of(definition)}
            steps = list(definition.get("steps") or [])
            counts: dict[int, dict[str, dict[str, int]]] = {}
            if any(step.get("winner") and step.get("variants") and number not in winners
                   for number, step in enumerate(steps, start=1)):
                counts = by_step_and_variant((await conn.execute(variant_counts_query(cid))).mappings())
            items = list(inputs.items)
            campaigns = dict(inputs.campaigns)
            senders = dict(inputs.senders)
            if changes.get("as_if") == "launched" and cid not in campaigns and state.status in ("draft", "paused"):
                row = {"id": cid, "workspace_id": ws}
                campaigns[cid] = campaign_plan(row, state.definition)
                items += await self._unlaunched_items(conn, cid, now, state.status)
                more_senders, monthly = await senders_and_limits(conn, [ws])
                senders = {**more_senders, **senders}
                inputs.monthly_limits.update(monthly)
        if cid in campaigns:
            campaigns[cid] = self._changed_plan(campaigns[cid], senders, changes)
        start, until = forecast_range(now, tz, n)
        sends = simulate(now, until, items, campaigns, senders, inputs.usage, inputs.monthly_limits)
        mine = with_variants([s for s in sends if s.campaign_id == cid], steps, winners, counts)
        by_day = forecast_by_day(mine, tz, start, n, with_variants=True)
        remaining = sum(len(steps) - item.step + 1 for item in items if item.campaign_id == cid)
        completion = None
        if remaining and len(mine) >= remaining:
            completion = local_date(max(s.at for s in mine), zone(tz)).isoformat()
        return {"timezone": tz, "days": by_day, "total": sum(d["count"] for d in by_day),
                "estimated_completion": completion, **({"what_if": changes} if changes else {})}

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
        n = _days(days)
        now = self.clock.now()
        async with self.store.reading() as conn:
            inputs = await load_inputs(conn, now, workspace_id=ws)
        start, until = forecast_range(now, "UTC", n)
        sends = simulate(now, until, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                         inputs.monthly_limits)
        by_day = forecast_by_day(sends, "UTC", start, n)
        return {"timezone": "UTC", "days": by_day, "total": sum(d["count"] for d in by_day)}
