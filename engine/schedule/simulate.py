"""The forecast: the planner run forward in simulated time, assuming every send succeeds.

It calls the very code ``plan()`` calls, at `now` and then at each next due time, records each send
in the usage and queues the next step exactly as the tick does (:func:`planner.follow_up`). So,
if no reply, bounce, unsubscribe, new enrollment or edit happens, and the tick runs at each
``next_due_at``, the engine sends what this predicts, at the predicted times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from engine.schedule._core import Context, DueTracker, build_queue, next_due, send_now
from engine.schedule.model import CampaignPlan, QueueItem, SenderPlan, Usage
from engine.schedule.planner import follow_up
from engine.schedule.tzutil import as_utc, local_date, local_day_start, zone

__all__ = ["SimulatedSend", "default_email_id", "forecast_by_day", "forecast_range", "simulate"]

# The longest simulation whose next due times are worked out incrementally (:class:`DueTracker`):
# its slot searches look at most this far ahead, well inside the planner's own search horizon.
_TRACKED = timedelta(days=200)


@dataclass(frozen=True, slots=True)
class SimulatedSend:
    """One predicted send. For steps not yet scheduled, `email_id` is invented (`email_id_for`).

    ``at`` is the instant of the planner round that sends it (one tick), so sends with the same
    ``at`` are one round. ``variant`` is the step's A/B variant, filled in by the caller that knows
    the steps' content (the planner does not: a variant never changes when an email goes).
    """

    email_id: str
    enrollment_id: str
    campaign_id: str
    step: int
    sender_id: str
    at: datetime
    variant: str | None = None


def default_email_id(enrollment_id: str, step: int) -> str:
    """Placeholder id of a step the forecast queues itself; ids never affect the order of sends."""
    return f"{enrollment_id}:step:{step}"


def simulate(
    now: datetime,
    until: datetime,
    items: Iterable[QueueItem],
    campaigns: Mapping[str, CampaignPlan],
    senders: Mapping[str, SenderPlan],
    usage: Usage,
    monthly_limits: Mapping[str, int | None],
    *,
    email_id_for: Callable[[str, int], str] = default_email_id,
) -> list[SimulatedSend]:
    """Every send from `now` to `until` (inclusive), in order, if nothing but time happens."""
    now = as_utc(now, "now")
    until = as_utc(until, "until")
    ctx = Context(campaigns, senders, monthly_limits)
    queue = build_queue(ctx, items)
    out: list[SimulatedSend] = []
    at: datetime | None = now
    usage = usage.owned()  # recorded in place from here on: the caller's usage stays as it was
    able: dict[tuple[str, str], bool] | None = None  # the pairs that can send at `at` (None: weigh them all)
    # next_due worked out incrementally; not over a horizon so long that its searches would be cut short
    tracker = DueTracker(ctx, queue, until) if until - now <= _TRACKED else None
    while at is not None and at <= until:
        sends, usage = send_now(at, queue, ctx, usage, owned=True, able=able)
        for send in sends:
            item = send.item
            if tracker is not None:
                tracker.sent(item.campaign_id, send.sender_id)
            out.append(
                SimulatedSend(
                    email_id=item.email_id,
                    enrollment_id=item.enrollment_id,
                    campaign_id=item.campaign_id,
                    step=item.step,
                    sender_id=send.sender_id,
                    at=send.at,
                )
            )
            campaign = campaigns[item.campaign_id]
            nxt = follow_up(send, campaign, email_id_for(item.enrollment_id, item.step + 1))
            if nxt is not None:
                tz = ctx.admit(nxt)
                if tz is not None:
                    queue.add(nxt, tz)
                    if tracker is not None:
                        tracker.added(nxt)
        able = {}
        at = next_due(at, queue, ctx, usage, able) if tracker is None else tracker.next_due(at, usage, able)
    return out


def forecast_range(now: datetime, tz: str, days: int) -> tuple[date, datetime]:
    """(first local day, last instant) of a forecast of `days` local calendar days from today.

    The last instant is the microsecond before local midnight ending the last day, so that
    ``simulate(now, until, ...)`` covers exactly those days.
    """
    zone_info = zone(tz)
    start = local_date(as_utc(now, "now"), zone_info)
    end = local_day_start(start + timedelta(days=days), zone_info)
    return start, end - timedelta(microseconds=1)


def forecast_by_day(sends: Iterable[SimulatedSend], tz: str, start_date: date, days: int, *,
                    with_variants: bool = False) -> list[dict[str, Any]]:
    """Sends grouped by local calendar day in `tz`: one entry per day, empty days included.

    Each entry is ``{date: "YYYY-MM-DD", count, by_step: {"1": n}, by_sender: {id: n}}`` with
    steps in numeric order and senders sorted; sends outside the range are ignored. With
    ``with_variants`` (one campaign's sends, whose ``variant`` the caller filled in) each entry
    also has ``by_variant: {"1": {"A": n, "B": m}}``: per step with variants, per variant id
    (sorted), summing to that step's ``by_step`` count.
    """
    zone_info = zone(tz)
    buckets: dict[date, list[SimulatedSend]] = {start_date + timedelta(days=i): [] for i in range(days)}
    for send in sends:
        day = local_date(send.at, zone_info)
        if day in buckets:
            buckets[day].append(send)
    result: list[dict[str, Any]] = []
    for day, day_sends in buckets.items():
        steps: dict[int, int] = {}
        by_sender: dict[str, int] = {}
        by_variant: dict[int, dict[str, int]] = {}
        for send in day_sends:
            steps[send.step] = steps.get(send.step, 0) + 1
            by_sender[send.sender_id] = by_sender.get(send.sender_id, 0) + 1
            if send.variant is not None:
                per_step = by_variant.setdefault(send.step, {})
                per_step[send.variant] = per_step.get(send.variant, 0) + 1
        entry: dict[str, Any] = {
            "date": day.isoformat(),
            "count": len(day_sends),
            "by_step": {str(k): steps[k] for k in sorted(steps)},
            "by_sender": {k: by_sender[k] for k in sorted(by_sender)},
        }
        if with_variants:
            entry["by_variant"] = {str(step): dict(sorted(by_variant[step].items())) for step in sorted(by_variant)}
        result.append(entry)
    return result
