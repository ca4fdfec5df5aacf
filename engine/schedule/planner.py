"""The send planner: one pure function that both the tick and the forecast run.

``plan(now, ...)`` answers "which queued emails go now, through which sender" and "when could the
next one go". It owns every sending rule: window (campaign or contact zone), launch_at, per
(campaign, sender) spacing (cron / every_minutes / seeded wait), campaign max_per_hour and
daily_limit, each sender's varied daily limit across all campaigns, the workspace's monthly limit,
priority, pinned senders for follow-ups and round-robin for first steps. See ``_core`` for how.

How the tick must use it so that it sends exactly what the forecast predicted::

    p = plan(now, items, campaigns, senders, usage, monthly_limits)
    for a in p.sends:                        # claim + send a.item through a.sender_id at a.at
        nxt = follow_up(a, campaigns[a.item.campaign_id], email_id=new_id)  # schedule step n+1
    wake = next_due_at(now, items_after, campaigns, senders, usage_after, monthly_limits)

``p.next_due_at`` is enough when no follow-up was created; with follow-ups, ask
:func:`next_due_at` again with the new queue (``p.usage`` is the usage after the sends).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from engine.schedule._core import Assignment, Context, build_queue, next_due, send_now
from engine.schedule._queue import ItemQueue
from engine.schedule.model import CampaignPlan, QueueItem, SenderPlan, Usage
from engine.schedule.tzutil import as_utc
from engine.schedule.windows import add_delay

__all__ = ["Assignment", "Plan", "PlanRound", "follow_up", "next_due_at", "plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer of :func:`plan`.

    `sends`: in the order they were chosen (best first). `next_due_at`: the earliest moment strictly
    after `now` at which :func:`plan` could send again if no item is added (None: nothing can).
    `usage`: the input usage with these sends recorded.
    """

    sends: tuple[Assignment, ...]
    next_due_at: datetime | None
    usage: Usage


def plan(
    now: datetime,
    items: Iterable[QueueItem],
    campaigns: Mapping[str, CampaignPlan],
    senders: Mapping[str, SenderPlan],
    usage: Usage,
    monthly_limits: Mapping[str, int | None],
) -> Plan:
    """Decide what goes at `now` (timezone-aware) and when anything can go next.

    Items of inactive or unknown campaigns, and pinned items whose sender is inactive or no longer
    one of the campaign's senders, wait. A workspace missing from `monthly_limits` is unlimited.
    """
    now = as_utc(now, "now")
    ctx = Context(campaigns, senders, monthly_limits)
    queue = build_queue(ctx, items)
    sends, after = send_now(now, queue, ctx, usage)
    return Plan(sends=tuple(sends), next_due_at=next_due(now, queue, ctx, after), usage=after)


def next_due_at(
    now: datetime,
    items: Iterable[QueueItem],
    campaigns: Mapping[str, CampaignPlan],
    senders: Mapping[str, SenderPlan],
    usage: Usage,
    monthly_limits: Mapping[str, int | None],
) -> datetime | None:
    """The earliest moment strictly after `now` at which :func:`plan` could send; None if never.

    Exact: a call at any moment strictly between `now` and the answer sends nothing, so extra
    ticks never change what is sent.
    """
    now = as_utc(now, "now")
    ctx = Context(campaigns, senders, monthly_limits)
    return next_due(now, build_queue(ctx, items), ctx, usage)


def follow_up(assignment: Assignment, campaign: CampaignPlan, email_id: str) -> QueueItem | None:
    """The next step's queue item after `assignment` was sent, or None after the last step.

    Due `step_delays[n]` after the send of step n (in the campaign's zone; business days skip
    weekends and the schedule's skip dates and holidays), pinned to the same sender so it
    threads, with the same priority and seq.
    """
    item = assignment.item
    if item.step >= len(campaign.step_delays):
        return None
    return QueueItem(
        email_id=email_id,
        enrollment_id=item.enrollment_id,
        campaign_id=item.campaign_id,
        contact_id=item.contact_id,
        step=item.step + 1,
        due_at=add_delay(
            assignment.at,
            campaign.step_delays[item.step],
            campaign.schedule.timezone,
            campaign.schedule.closed_days,
        ),
        priority=item.priority,
        sender_id=assignment.sender_id,
        contact_timezone=item.contact_timezone,
        seq=item.seq,
        domain=item.domain,
    )


class PlanRound:
    """One tick's planning: what goes at `now` (taken in bounded batches), then when to wake.

    The tick takes its sends, records their outcomes, puts back what comes next (the follow-ups
    it scheduled, the retries of deferred emails) and asks :meth:`next_due_at` with the usage as
    the outcomes left it. Taking in batches gives exactly what one :func:`plan` call (and the
    forecast) would send at `now`: see ``_core.send_now``.
    """

    def __init__(
        self,
        now: datetime,
        items: Iterable[QueueItem],
        campaigns: Mapping[str, CampaignPlan],
        senders: Mapping[str, SenderPlan],
        usage: Usage,
        monthly_limits: Mapping[str, int | None],
    ) -> None:
        self.now = as_utc(now, "now")
        self._ctx = Context(campaigns, senders, monthly_limits)
        self._queue: ItemQueue = build_queue(self._ctx, items)
        # the round's own copy of `usage` (the caller's is left as it was): each send is recorded in
        # it in place, instead of in a new copy of every counter per send
        self.usage = usage.owned()

    def take(self, limit: int | None = None) -> tuple[Assignment, ...]:
        """The next sends at `now` (at most `limit`), best first; :attr:`usage` records them (in place)."""
        sends, self.usage = send_now(self.now, self._queue, self._ctx, self.usage, limit, owned=True)
        return tuple(sends)

    def requeue(self, item: QueueItem) -> None:
        """Queue an email that now waits (a follow-up, a retry), if its campaign can send it."""
        zone = self._ctx.admit(item)
        if zone is not None:
            self._queue.add(item, zone)

    def next_due_at(self, usage: Usage | None = None) -> datetime | None:
        """The earliest moment strictly after `now` at which the queue could send (see :func:`next_due_at`)."""
        return next_due(self.now, self._queue, self._ctx, self.usage if usage is None else usage)
