"""The forecast's incremental next due time (``DueTracker``) against the planner's own ``next_due``.

``simulate()`` works out each round's next due time from a heap of per-pair lower bounds and
weighs again only the pairs whose bound is below the answer. Here the forecast's loop is played
with both at every round, on queues larger than the main property's (a shared pool that several
senders drain, pinned follow-ups, warm-ups, contact zones, per-domain limits): the tracker must
give the very moment ``next_due`` gives whenever that moment is inside the forecast, and the
sends that follow must be the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.schedule import QueueItem, SenderPlan, Usage, Warmup, default_email_id, follow_up, simulate
from engine.schedule._core import Context, DueTracker, build_queue, next_due, send_now
from tests.schedule.test_properties import CONTACT_ZONES, Scenario, scenarios, tick_loop


@st.composite
def larger(draw: st.DrawFn) -> Scenario:
    """The main property's scenario with up to 30 more emails and some senders warming up."""
    sc = draw(scenarios())
    senders = dict(sc["senders"])
    for sid, sender in sc["senders"].items():
        if draw(st.booleans()):
            warmup = Warmup(draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(2, 8)))
            senders[sid] = SenderPlan(sender_id=sid, daily_limit=draw(st.sampled_from((None, 3, 20))),
                                      daily_limit_variation_pct=sender.daily_limit_variation_pct,
                                      active=sender.active, warmup=warmup if draw(st.booleans()) else None)
    queue = list(sc["queue"])
    for n in range(draw(st.integers(0, 30))):
        plan = sc["campaigns"][draw(st.sampled_from(sorted(sc["campaigns"])))]
        step = draw(st.integers(1, len(plan.step_delays)))
        queue.append(QueueItem(
            email_id=f"{plan.campaign_id}-x{n}", enrollment_id=f"{plan.campaign_id}-m{n}",
            campaign_id=plan.campaign_id, contact_id=f"k{n}", step=step,
            due_at=sc["start"] + timedelta(minutes=draw(st.integers(-600, 3000))),
            priority=draw(st.integers(0, 1)),
            sender_id=None if step == 1 else draw(st.sampled_from(plan.sender_ids)),
            contact_timezone=draw(st.sampled_from(CONTACT_ZONES)), seq=n,
            domain=draw(st.sampled_from(("gmail.com", "corp.io", None)))))
    return {**sc, "senders": senders, "queue": queue}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(larger())
def test_the_tracker_answers_what_next_due_answers_at_every_round(sc: Scenario) -> None:
    until: datetime = sc["until"]
    ctx = Context(sc["campaigns"], sc["senders"], sc["monthly"])
    queue = build_queue(ctx, sc["queue"])
    tracker = DueTracker(ctx, queue, until)
    usage = Usage.from_sends(sc["history"], sc["campaigns"]).owned()
    at: datetime | None = sc["start"]
    able: dict[tuple[str, str], bool] | None = None
    while at is not None and at <= until:
        sends, usage = send_now(at, queue, ctx, usage, owned=True, able=able)
        for send in sends:
            tracker.sent(send.item.campaign_id, send.sender_id)
            nxt = follow_up(send, sc["campaigns"][send.item.campaign_id],
                            default_email_id(send.item.enrollment_id, send.item.step + 1))
            if nxt is not None and (zone := ctx.admit(nxt)) is not None:
                queue.add(nxt, zone)
                tracker.added(nxt)
        expected = next_due(at, queue, ctx, usage)
        able = {}
        at = tracker.next_due(at, usage, able)
        if expected is not None and expected <= until:
            assert at == expected
            assert able, "the pairs able to send at the answer are named"
        else:
            assert at is None or at > until


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(larger())
def test_larger_queues_forecast_what_the_tick_loop_sends(sc: Scenario) -> None:
    usage = Usage.from_sends(sc["history"], sc["campaigns"])
    assert tick_loop(sc) == simulate(sc["start"], sc["until"], sc["queue"], sc["campaigns"], sc["senders"], usage,
                                     sc["monthly"])
