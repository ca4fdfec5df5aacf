"""``send_now`` against a copy of the per-pair planner it replaced: the very same sends, always.

``send_now`` once kept one heap entry per (campaign, sender) pair and, after each send of a
campaign, popped and pushed again every other pair of that campaign (all their entries went stale)
to find the next winner. It now handles a campaign whose weighed pairs have no pinned items and no
per-domain limits with one entry per campaign, and keeps the per-pair logic for the rest. That is
only allowed if no decision changes, so the old loop is kept here, verbatim, as the reference; both
are played round after round from random scenarios (the property tests' generators, with more
senders shared between campaigns, zero and non-zero spacing, pinned follow-ups, per-domain limits,
sender, campaign and workspace limits filling mid-call, bounded batches, ``owned`` usage and
``able`` pairs from ``next_due``), and each call must return the same assignments and leave the
same usage and queue.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.schedule import (
    CampaignPlan,
    Delay,
    QueueItem,
    ScheduleSpec,
    SenderPlan,
    SendRecord,
    Usage,
    default_email_id,
    follow_up,
)
from engine.schedule._core import (
    Assignment,
    Context,
    _candidate,
    _domain_limited,
    _domain_release,
    _limits_release,
    _may_repeat,
    _send_alone,
    _spaced,
    build_queue,
    next_due,
    send_now,
)
from engine.schedule._queue import ItemQueue, RankKey
from tests.schedule.test_due_tracker import larger
from tests.schedule.test_properties import Scenario

MONDAY = datetime(2026, 1, 5, 10, 40, tzinfo=UTC)
ALL_DAY = {"days": ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "start_time": "00:00", "end_time": "24:00"}
MORE_SENDERS = ("s4", "s5", "s6")
SPACINGS: tuple[dict[str, int], ...] = (
    {"min_wait_seconds": 0, "max_wait_seconds": 0}, {"min_wait_seconds": 0, "max_wait_seconds": 0},
    {"min_wait_seconds": 0, "max_wait_seconds": 1}, {"min_wait_seconds": 0, "max_wait_seconds": 1},
    {"every_minutes": 1},
    {"min_wait_seconds": 60, "max_wait_seconds": 120},
)


def reference_rotation(ctx: Context, usage: Usage, c: str) -> dict[tuple[str, str], int]:
    """The per-pair planner's sender rotation (a copy of ``_core._campaign_rotation`` as it was)."""
    senders = ctx.active_senders[c]
    last = usage.last_sender(c)
    if last in senders:
        after = senders.index(last)
    else:
        latest: tuple[datetime, int] | None = None
        for index, s in enumerate(senders):
            send = usage.last_send(c, s)
            if send is not None and (latest is None or (send.at, index) > latest):
                latest = (send.at, index)
        after = -1 if latest is None else latest[1]
    return {(c, s): (index - after - 1) % len(senders) for index, s in enumerate(senders)}


def reference_send_now(
    now: datetime, queue: ItemQueue, ctx: Context, usage: Usage, limit: int | None = None, *, owned: bool = False,
    able: dict[tuple[str, str], bool] | None = None,
) -> tuple[list[Assignment], Usage]:
    """``send_now`` as it was: one heap entry per pair, every pair of a campaign weighed again after
    each of its sends."""
    if able is not None and len(able) == 1 and (limit is None or limit > 0):
        (c, s), known = next(iter(able.items()))
        if known and not _domain_limited(ctx, c) and _spaced(ctx, c):
            return _send_alone(now, queue, ctx, usage, c, s, owned)
    rotations: dict[str, dict[tuple[str, str], int]] = {}
    versions: dict[str, int] = dict.fromkeys(ctx.campaigns, 0)
    heap: list[tuple[RankKey, int, str, str, int]] = []
    slotted: set[tuple[str, str]] = {pair for pair, known in able.items() if known} if able is not None else set()
    open_zones: dict[tuple[str, str], bool] = {}
    shared: dict[str, tuple[int, RankKey | None]] = {}

    def push(c: str, s: str) -> None:
        if (c, s) in slotted and not queue.has_pinned(c, s) and not _domain_limited(ctx, c):
            memo = shared.get(c)
            if memo is None or memo[0] != queue.changes:
                memo = shared[c] = (queue.changes, _candidate(ctx, queue, usage, c, s, now, True, open_zones))
            key = memo[1]
        else:
            key = _candidate(ctx, queue, usage, c, s, now, (c, s) in slotted, open_zones)
        if key is not None:
            slotted.add((c, s))
            rotation = rotations.get(c)
            if rotation is None:
                rotation = rotations[c] = reference_rotation(ctx, usage, c)
            heapq.heappush(heap, (key, rotation[(c, s)], c, s, versions[c]))

    for c, s in ctx.pairs:
        if able is None or (c, s) in able:
            push(c, s)
    used: set[tuple[str, str]] = set()
    sends: list[Assignment] = []
    while heap and (limit is None or len(sends) < limit):
        key, _, c, s, version = heapq.heappop(heap)
        if (c, s) in used:
            continue
        if version != versions[c] or key[-1] not in queue.items:
            push(c, s)
            continue
        if _limits_release(ctx, usage, c, s, now) != now:
            continue
        if _domain_limited(ctx, c) and _domain_release(ctx, usage, c, s, queue.items[key[-1]].domain, now) != now:
            push(c, s)
            continue
        item = queue.remove(key[-1])
        campaign = ctx.campaigns[c]
        usage = (usage.record_in_place if owned else usage.record)(
            campaign_id=c, sender_id=s, workspace_id=campaign.workspace_id, at=now,
            timezone=campaign.schedule.timezone, domain=item.domain)
        sends.append(Assignment(item=item, sender_id=s, at=now))
        versions[c] += 1
        slotted.discard((c, s))
        rotations.pop(c, None)
        if _may_repeat(ctx, usage, c, s, now):
            push(c, s)
        else:
            used.add((c, s))
    return sends, usage


@st.composite
def busy(draw: st.DrawFn) -> Scenario:
    """A larger scenario made busier at single instants: more senders shared by the campaigns, some
    campaigns without waits, windows open all day, pins and per-domain limits sometimes dropped."""
    sc = draw(larger())
    senders: dict[str, SenderPlan] = {sid: replace(plan, daily_limit=None) if draw(st.booleans()) else plan
                                      for sid, plan in sc["senders"].items()}
    extra = draw(st.integers(0, len(MORE_SENDERS)))
    for sid in MORE_SENDERS[:extra]:
        senders[sid] = SenderPlan(sender_id=sid, daily_limit=draw(st.sampled_from((None, None, 1, 3, 8))),
                                  active=draw(st.sampled_from((True, True, True, False))))
    campaigns: dict[str, CampaignPlan] = {}
    unpinned: set[str] = set()
    plans = dict(sc["campaigns"])
    if draw(st.booleans()):  # a third campaign, its senders in another order
        first = plans["c1"]
        plans["c3"] = replace(first, campaign_id="c3", sender_ids=first.sender_ids[::-1],
                              workspace_id=draw(st.sampled_from(("w1", "w2"))))
    for cid, plan in plans.items():
        schedule: ScheduleSpec = plan.schedule
        changes: dict[str, object] = {}
        spacing = draw(st.sampled_from(("kept", "none", "none", "tiny")))
        if spacing != "kept":  # no wait at all, or a drawn wait of 0 or 1 s (0 still spaces sends by an instant)
            changes.update(min_wait_seconds=0, max_wait_seconds=int(spacing == "tiny"), every_minutes=None, cron=None)
        if draw(st.booleans()):
            changes.update(ALL_DAY, skip_dates=(), holidays=None)
        if draw(st.booleans()):
            changes.update(max_per_domain_per_hour=None, max_per_domain_per_day=None)
        if draw(st.booleans()):
            changes.update(max_per_hour=None, daily_limit=None)
        if changes:
            schedule = replace(schedule, **changes)  # type: ignore[arg-type]
        more = tuple(draw(st.lists(st.sampled_from(MORE_SENDERS[:extra]), unique=True))) if extra else ()
        campaigns[cid] = replace(plan, schedule=schedule, sender_ids=plan.sender_ids + more)
        if draw(st.booleans()):
            unpinned.add(cid)
    queue = [replace(item, sender_id=None) if item.campaign_id in unpinned else item for item in sc["queue"]]
    for n in range(draw(st.integers(0, 24))):  # a backlog: several items due at once, some of one domain
        cid = draw(st.sampled_from(sorted(campaigns)))
        queue.append(QueueItem(
            email_id=f"{cid}-b{n}", enrollment_id=f"{cid}-b{n}", campaign_id=cid, contact_id=f"b{n}", step=1,
            due_at=sc["start"] - timedelta(minutes=draw(st.sampled_from((0, 5, 90)))),
            priority=draw(st.integers(0, 1)), seq=n, domain=draw(st.sampled_from(("gmail.com", "corp.io", None)))))
    monthly = {workspace: None if draw(st.booleans()) else limit for workspace, limit in sc["monthly"].items()}
    return {**sc, "senders": senders, "campaigns": campaigns, "queue": queue, "monthly": monthly,
            "limits": draw(st.lists(st.sampled_from((None, None, 1, 2, 3, 7)), min_size=1, max_size=6)),
            "flags": draw(st.lists(st.booleans(), min_size=2, max_size=12)),
            # minutes from the start of the first instant, then of each jump past next_due (0: no jump)
            "jumps": draw(st.lists(st.sampled_from((0, 0, 0, 7, 60, 300, 1500)), min_size=1, max_size=8))}


def follow_ups(sends: list[Assignment], sc: Scenario) -> list[QueueItem]:
    found = []
    for send in sends:
        nxt = follow_up(send, sc["campaigns"][send.item.campaign_id],
                        default_email_id(send.item.enrollment_id, send.item.step + 1))
        if nxt is not None:
            found.append(nxt)
    return found


@st.composite
def crowded(draw: st.DrawFn) -> Scenario:
    """Up to three campaigns open all day sharing up to six senders, their backlog due at once: many
    sends per instant, rotations turning, limits filling up within a call, pinned follow-ups due
    at once (a step with no delay) appearing between batches."""
    start = MONDAY
    senders = {sid: SenderPlan(sender_id=sid, daily_limit=draw(st.sampled_from((None, None, 2, 5))),
                               active=draw(st.sampled_from((True, True, True, False))))
               for sid in ("s1", "s2", "s3", *MORE_SENDERS)}
    campaigns: dict[str, CampaignPlan] = {}
    for index in range(draw(st.integers(1, 3))):
        cid = f"c{index + 1}"
        order = draw(st.permutations(sorted(senders)))
        schedule = ScheduleSpec.from_dict({
            **ALL_DAY, **draw(st.sampled_from(SPACINGS)), "timezone": draw(st.sampled_from(("UTC", "Asia/Kolkata"))),
            "max_per_hour": draw(st.sampled_from((None, None, 4))),
            "daily_limit": draw(st.sampled_from((None, None, 6))),
            "max_per_domain_per_hour": draw(st.sampled_from((None, None, 1, 2)))})
        campaigns[cid] = CampaignPlan(
            campaign_id=cid, workspace_id=draw(st.sampled_from(("w1", "w2"))), schedule=schedule,
            sender_ids=tuple(order[:draw(st.integers(1, len(order)))]),
            step_delays=tuple(draw(st.lists(st.sampled_from((Delay(), Delay(minutes=30))), min_size=1, max_size=3))))
    queue = []
    for n in range(draw(st.integers(4, 40))):
        plan = campaigns[draw(st.sampled_from(sorted(campaigns)))]
        step = draw(st.integers(1, len(plan.step_delays)))
        queue.append(QueueItem(
            email_id=f"{plan.campaign_id}-e{n}", enrollment_id=f"{plan.campaign_id}-n{n}",
            campaign_id=plan.campaign_id, contact_id=f"k{n}", step=step,
            due_at=start - timedelta(minutes=draw(st.sampled_from((0, 5, 60)))), priority=draw(st.integers(0, 1)),
            sender_id=draw(st.sampled_from((None, None, None, *plan.sender_ids))) if step > 1 else None,
            seq=n, domain=draw(st.sampled_from(("gmail.com", "gmail.com", "corp.io", None)))))
    history = [SendRecord(campaign_id=draw(st.sampled_from(sorted(campaigns))),
                          sender_id=draw(st.sampled_from(sorted(senders))), workspace_id="w1",
                          sent_at=start - timedelta(minutes=draw(st.integers(0, 45))),
                          domain=draw(st.sampled_from(("gmail.com", "gmail.com", "corp.io", None))))
               for _ in range(draw(st.integers(0, 8)))]
    return {"start": start, "senders": senders, "campaigns": campaigns, "queue": queue, "history": history,
            "monthly": {"w1": draw(st.sampled_from((None, None, 10))), "w2": None},
            "limits": draw(st.lists(st.sampled_from((None, None, 1, 2, 3, 7)), min_size=1, max_size=6)),
            "flags": draw(st.lists(st.booleans(), min_size=2, max_size=12)),
            "jumps": draw(st.lists(st.sampled_from((0, 0, 0, 1, 7, 60)), min_size=1, max_size=8))}


def play(sc: Scenario) -> None:
    """Play `sc` forward instant after instant with ``send_now`` and the reference side by side
    (see the tests), asserting after each call that both did the same."""
    ctx, old_ctx = (Context(sc["campaigns"], sc["senders"], sc["monthly"]) for _ in range(2))
    queue, old_queue = build_queue(ctx, sc["queue"]), build_queue(old_ctx, sc["queue"])
    usage = Usage.from_sends(sc["history"], sc["campaigns"])
    limits: list[int | None] = sc["limits"]
    flags: list[bool] = sc["flags"]
    jumps: list[int] = sc["jumps"]
    at: datetime | None = sc["start"] + timedelta(minutes=jumps[0] * 2)
    able: dict[tuple[str, str], bool] | None = None
    for round_ in range(12):
        if at is None:
            break
        limit = limits[round_ % len(limits)]
        owned = flags[round_ % len(flags)]
        while True:  # bounded batches at one instant, as a tick takes them
            mine, theirs = (usage.owned(), usage.owned()) if owned else (usage, usage)
            sends, after = send_now(at, queue, ctx, mine, limit, owned=owned, able=able)
            old_sends, old_after = reference_send_now(at, old_queue, old_ctx, theirs, limit, owned=owned, able=able)
            assert sends == old_sends
            assert after == old_after
            assert queue.items == old_queue.items
            usage, able = after, None  # `able` holds for the queue and usage next_due saw, not after a batch
            for nxt in follow_ups(sends, sc):
                if (tz := ctx.admit(nxt)) is not None:
                    queue.add(nxt, tz)
                    old_queue.add(nxt, tz)
            if limit is None or len(sends) < limit:
                break
        jump = jumps[(round_ + 1) % len(jumps)]
        if jump:  # a tick late by `jump` minutes (downtime): every pair with overdue items at once
            at += timedelta(minutes=jump)
            continue
        if flags[(round_ + 1) % len(flags)]:
            able = {}
        at = next_due(at, queue, ctx, usage, able)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy())
def test_send_now_sends_what_the_per_pair_planner_sends(sc: Scenario) -> None:
    """Given a property-test scenario (windows, zones, cron, limits of every kind) played forward
    instant after instant, follow-ups queued after each send; when ``send_now`` and the reference
    are called on equal queues and usages, at each instant in batches of a drawn size, with
    ``able`` from ``next_due`` or without, owned usage or not; then both send the same items
    through the same senders, and leave equal usages and queues."""
    play(sc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded())
def test_crowded_instants_send_what_the_per_pair_planner_sends(sc: Scenario) -> None:
    """The same on crowded instants: campaigns sharing up to six senders with their backlog due at
    once, no wait, a drawn wait of 0 or 1 s, or a minute between sends."""
    play(sc)
