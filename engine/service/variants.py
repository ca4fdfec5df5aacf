"""A/B auto-winners, decided by the tick right after it records a batch of outcomes.

Checked there, in the same transaction, because that is when a step's send count grows: the
winner then applies from the very next email composed. Only steps of this batch's sent emails
that have a ``winner`` rule and no winner yet are counted (one grouped read per step), so a
campaign without variants costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.domain import campaign as campaign_domain
from engine.domain.definition import definition_from_json
from engine.domain.variants import VariantCounts, pick_winner
from events.catalog import campaign as campaign_events
from events.catalog import email as email_events
from events.store import AppendBatch, EventStore
from projections import tables as t
from projections.sending import emails

__all__ = ["by_step_and_variant", "record_variant_winners", "variant_counts_query"]


COUNTED = ("sent", "opened", "clicked", "replied", "bounced")


def variant_counts_query(campaign_id: str) -> Select[Any]:
    """Rows (step, variant, sent, opened, clicked, replied, bounced) of the campaign's emails that
    carry a variant: what ``stats/steps`` reports per variant and the winner is judged by."""
    e = emails.c

    def count(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    return (select(e.step, e.variant, count(e.sent_at.is_not(None)).label("sent"),
                   count(e.opened_at.is_not(None)).label("opened"), count(e.clicked_at.is_not(None)).label("clicked"),
                   count(e.replied_at.is_not(None)).label("replied"), count(e.status == "bounced").label("bounced"))
            .where(e.campaign_id == campaign_id, e.variant.is_not(None)).group_by(e.step, e.variant))


def by_step_and_variant(rows: Iterable[Any]) -> dict[int, dict[str, dict[str, int]]]:
    """The rows of :func:`variant_counts_query` as step -> variant -> counts."""
    out: dict[int, dict[str, dict[str, int]]] = {}
    for row in rows:
        out.setdefault(int(row["step"]), {})[str(row["variant"])] = {name: int(row[name]) for name in COUNTED}
    return out


async def record_variant_winners(store: EventStore, conn: AsyncConnection,
                                 batches: Mapping[str, Sequence[AppendBatch]]) -> int:
    """Append ``campaign.variant_won`` for each step of ``batches``' sent emails whose winner rule is
    now met; returns how many were recorded. Runs inside the outcomes' transaction (``conn``)."""
    touched: set[tuple[str, str, int]] = set()
    for workspace_id, appends in batches.items():
        for append in appends:
            for event in append.events:
                if isinstance(event, email_events.EmailSent) and event.variant is not None:
                    touched.add((workspace_id, event.campaign_id, event.step))
    recorded = 0
    for workspace_id, campaign_id, step_number in sorted(touched):
        raw = (await conn.execute(select(t.campaigns.c.definition).where(t.campaigns.c.id == campaign_id))).scalar()
        if not raw:
            continue
        definition = definition_from_json(raw)
        if not 1 <= step_number <= len(definition.steps) or step_number in definition.winners():
            continue
        step = definition.steps[step_number - 1]
        if step.winner is None:
            continue
        metric = step.winner.metric
        rows = (await conn.execute(variant_counts_query(campaign_id).where(emails.c.step == step_number))).mappings()
        found = by_step_and_variant(rows).get(step_number, {})
        counts = [VariantCounts(variant, c["sent"], c["opened"], c["clicked"], c["replied"])
                  for variant, c in found.items()]
        won = pick_winner(step, counts)
        if won is None:
            continue
        stream = f"campaign-{campaign_id}"
        state = campaign_domain.CampaignState()
        events = await store.read_stream(stream, conn=conn)
        for stored in events:
            state = campaign_domain.evolve(state, stored.event)
        if any(number == step_number for number, _ in state.variant_winners):
            continue  # recorded meanwhile, the read model not yet showing it
        variant, value = won
        await store.append(stream, [campaign_events.CampaignVariantWon(
            campaign_id=campaign_id, step=step_number, variant=variant, metric=metric,
            value=value)], events[-1].version if events else 0, workspace_id=workspace_id, conn=conn)
        recorded += 1
    return recorded
