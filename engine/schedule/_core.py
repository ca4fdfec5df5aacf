"""The planner's rules, shared by ``plan()`` (tick) and ``simulate()`` (forecast).

Vocabulary. A *pair* is (campaign, sender). Its *lower bound* L is the later of the campaign's
launch_at and the pair's next allowed time after its last send (cron / every_minutes / seeded
wait). A time x is *open* for a pair and a window zone when the window is open at x and no limit
(campaign hour and day, sender day, workspace month) is full at x.

The pair's *slot* S is the first open time >= L at which one of its items is due (with ``cron``:
the first such time that is also a fire time). A pair may send at `now` when S <= now, an item is
due and in its window at `now`, and no limit is full at `now`. Normally S == now: the tick runs at
the slot. After downtime S lies in the past and the pair sends once, now, and its spacing starts
again from that send: never a burst, never a skipped contact. A cron pair is the exception: it
sends only at its fire times, so after downtime it waits for the next one.

S depends only on the queue and the usage, never on `now`; that is what makes ``next_due`` exact
(no call strictly between `now` and the answer can send) and the forecast robust to extra ticks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from engine.schedule._queue import ItemQueue, Pool, RankKey
from engine.schedule.cron import next_fire_at_or_after
from engine.schedule.model import CampaignPlan, LastSend, QueueItem, SenderPlan, Usage
from engine.schedule.slots import effective_daily_limit, next_allowed_at
from engine.schedule.tzutil import (
    hour_start,
    local_date,
    local_day_start,
    next_month_start,
    next_utc_midnight,
    zone,
)
from engine.schedule.windows import Window, effective_timezone

__all__ = ["Assignment", "Context", "DueTracker", "build_queue", "next_due", "send_now"]

# How far a search for the next slot goes before deciding "not in the foreseeable future".
_HORIZON = timedelta(days=400)
_MAX_STEPS = 5_000
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Send `item` through `sender_id` at `at` (the `now` of the plan() call)."""

    item: QueueItem
    sender_id: str
    at: datetime


class _Never:
    """Marker: the pair can never send again (its cron has no later fire time)."""


_NEVER = _Never()


class Context:
    """Campaigns, senders and plan limits, pre-digested; fixed for one call or one forecast."""

    def __init__(
        self,
        campaigns: Mapping[str, CampaignPlan],
        senders: Mapping[str, SenderPlan],
        monthly_limits: Mapping[str, int | None],
    ) -> None:
        self.campaigns: dict[str, CampaignPlan] = {}
        self.active_senders: dict[str, tuple[str, ...]] = {}
        for cid in sorted(campaigns):
            campaign = campaigns[cid]
            if not campaign.active:
                continue
            chosen: list[str] = []
            for sid in campaign.sender_ids:
                sender = senders.get(sid)
                if sender is not None and sender.active and sid not in chosen:
                    chosen.append(sid)
            self.campaigns[cid] = campaign
            self.active_senders[cid] = tuple(chosen)
        self.senders = senders
        self.monthly_limits = monthly_limits
        self.pairs = [(c, s) for c, sids in self.active_senders.items() for s in sids]
        self.domain_limited = frozenset(  # campaigns under per-recipient-domain limits
            c for c, plan in self.campaigns.items()
            if plan.schedule.max_per_domain_per_hour is not None or plan.schedule.max_per_domain_per_day is not None)
        self._windows: dict[tuple[str, str], Window] = {}
        self._limits: dict[tuple[str, date], int | None] = {}
        # each pair's lower bound, with the last send it was worked out from (a forecast asks at every round)
        self.bounds: dict[tuple[str, str], tuple[object, datetime | None | _Never]] = {}

    def admit(self, item: QueueItem) -> str | None:
        """The zone of `item`'s window, or None when it cannot go now (campaign or sender inactive).

        A pinned item goes only through its own sender, and only while that sender is active and
        still one of the campaign's senders; otherwise it waits.
        """
        campaign = self.campaigns.get(item.campaign_id)
        if campaign is None:
            return None
        senders = self.active_senders[item.campaign_id]
        if not senders or (item.sender_id is not None and item.sender_id not in senders):
            return None
        return effective_timezone(campaign.schedule, item.contact_timezone)

    def window(self, campaign_id: str, tz: str) -> Window:
        key = (campaign_id, tz)
        found = self._windows.get(key)
        if found is None:
            spec = self.campaigns[campaign_id].schedule
            found = Window(tz, spec.weekday_numbers, spec.start_minute, spec.end_minute, spec.closed_days)
            self._windows[key] = found
        return found

    def sender_limit(self, sender_id: str, utc_day: date, usage: Usage) -> int | None:
        key = (sender_id, utc_day)
        if key in self._limits:
            return self._limits[key]
        sender = self.senders[sender_id]
        first = sender.first_send_day
        if sender.warmup is not None and first is None:
            # Never sent before this plan: its first send day is the first day the plan sends.
            days = [day for (sid, day), count in usage.sender_days.items() if sid == sender_id and count > 0]
            first = min(days) if days else None
            return effective_daily_limit(sender, utc_day, first)
        found = self._limits[key] = effective_daily_limit(sender, utc_day)
        return found


def build_queue(ctx: Context, items: Iterable[QueueItem]) -> ItemQueue:
    """A queue of the `items` that `ctx` admits (the others wait outside the plan)."""
    queue = ItemQueue()
    admitted = [(item, tz) for item in sorted(items, key=lambda i: i.email_id) if (tz := ctx.admit(item)) is not None]
    if len({item.email_id for item, _ in admitted}) == len(admitted):
        queue.fill(admitted)
    else:  # an email id given twice: the later one replaces the earlier, as add() does
        for item, tz in admitted:
            queue.add(item, tz)
    return queue


def _limits_release(ctx: Context, usage: Usage, c: str, s: str, at: datetime) -> datetime:
    """`at` when no limit is full at `at`, else the first moment every full limit has reset."""
    campaign = ctx.campaigns[c]
    spec = campaign.schedule
    release = at
    if spec.max_per_hour is not None or spec.daily_limit is not None:
        tz = zone(spec.timezone)
        if spec.max_per_hour is not None:
            start = hour_start(at, tz)
            if usage.sent_by_campaign_in_hour(c, start) >= spec.max_per_hour:
                release = max(release, start + timedelta(hours=1))
        if spec.daily_limit is not None:
            day = local_date(at, tz)
            if usage.sent_by_campaign_on(c, day) >= spec.daily_limit:
                release = max(release, local_day_start(day + timedelta(days=1), tz))
    day = at.date()
    limit = ctx.sender_limit(s, day, usage)
    if limit is not None and usage.sender_days.get((s, day), 0) >= limit:
        release = max(release, next_utc_midnight(at))
    monthly = ctx.monthly_limits.get(campaign.workspace_id)
    if monthly is not None:
        if usage.sent_by_workspace_in_month(campaign.workspace_id, at.year, at.month) >= monthly:
            release = max(release, next_month_start(at))
    return release


def _earliest(
    ctx: Context,
    usage: Usage,
    pair: tuple[str, str],
    window: Window,
    start: datetime,
    need_fire: bool,
    stop: datetime | None,
) -> datetime | None:
    """First time >= start that is open (and a fire time if `need_fire`), or None if after `stop`."""
    c, s = pair
    spec = ctx.campaigns[c].schedule
    end = start + _HORIZON if stop is None else min(start + _HORIZON, stop)
    x = start
    for _ in range(_MAX_STEPS):
        if x > end:
            return None
        y = _limits_release(ctx, usage, c, s, window.next_open(x))
        if need_fire and spec.cron is not None:
            fire = next_fire_at_or_after(spec.cron, spec.timezone, y)
            if fire is None:
                return None
            y = fire
        if y == x:
            return x
        x = y
    return None


def _lower_bound(ctx: Context, usage: Usage, c: str, s: str) -> datetime | None | _Never:
    """L (see module doc): it depends on the pair's last send only, so it is kept until that changes."""
    last = usage.last_send(c, s)
    kept = ctx.bounds.get((c, s))
    if kept is not None and kept[0] is last:
        return kept[1]
    bound = _work_out_bound(ctx, c, s, last)
    ctx.bounds[(c, s)] = (last, bound)
    return bound


def _work_out_bound(ctx: Context, c: str, s: str, last: LastSend | None) -> datetime | None | _Never:
    spec = ctx.campaigns[c].schedule
    bound = spec.launch_at
    if last is not None:
        allowed = next_allowed_at(spec, c, s, last)
        if allowed is None:
            return _NEVER
        bound = allowed if bound is None else max(bound, allowed)
    return bound


def _domain_limited(ctx: Context, c: str) -> bool:
    return c in ctx.domain_limited


def _domain_release(ctx: Context, usage: Usage, c: str, s: str, domain: str | None, at: datetime) -> datetime:
    """`at` when the sender may still send to `domain` at `at`, else when its full bucket ends.

    Per sender and recipient domain, by clock hour and calendar day in the campaign's zone. Only
    buckets that already hold sends can be full, so the moment returned is always open.
    """
    if domain is None:
        return at
    spec = ctx.campaigns[c].schedule
    tz = zone(spec.timezone)
    release = at
    if spec.max_per_domain_per_hour is not None:
        start = hour_start(at, tz)
        if usage.sent_to_domain_in_hour(s, domain, start) >= spec.max_per_domain_per_hour:
            release = max(release, start + timedelta(hours=1))
    if spec.max_per_domain_per_day is not None:
        day = local_date(at, tz)
        if usage.sent_to_domain_on(s, domain, day) >= spec.max_per_domain_per_day:
            release = max(release, local_day_start(day + timedelta(days=1), tz))
    return release


def _starts(
    ctx: Context,
    usage: Usage,
    pair: tuple[str, str],
    pools: list[Pool],
    floor: datetime | None,
    items: Mapping[str, QueueItem] | None,
) -> list[datetime]:
    """The moments from which the pair's items of `pools` could go: one without per-domain limits;
    with them, the first item of an open domain and each full domain's release (an email held by
    its domain's limit never holds back another domain's)."""
    due = min(pool.min_due() for pool in pools)
    if items is None or not _domain_limited(ctx, pair[0]):
        return [due if floor is None else max(due, floor)]
    starts: list[datetime] = []
    for pool in pools:
        seen: set[str | None] = set()
        for item_due, email_id in pool.dues():
            at = item_due if floor is None else max(item_due, floor)
            domain = items[email_id].domain
            if domain in seen:
                continue  # an earlier item of this domain already gave its (earlier) release
            release = _domain_release(ctx, usage, pair[0], pair[1], domain, at)
            starts.append(release)
            if release == at:
                break  # an open item: the pool's later items cannot start sooner
            seen.add(domain)
    return starts


def _earliest_over(
    ctx: Context,
    usage: Usage,
    pair: tuple[str, str],
    groups: list[tuple[str, list[Pool]]],
    floor: datetime | None,
    need_fire: bool,
    stop: datetime | None,
    items: Mapping[str, QueueItem] | None = None,
) -> datetime | None:
    """The earliest open time >= floor at which an item of `groups` is due (and, under per-domain
    limits, its domain open: `items` names each queued email's domain); None if after `stop`."""
    best: datetime | None = None
    for tz, pools in groups:
        for start in _starts(ctx, usage, pair, pools, floor, items):
            bound = stop if best is None else (best if stop is None else min(best, stop))
            found = _earliest(ctx, usage, pair, ctx.window(pair[0], tz), start, need_fire, bound)
            if found is not None and (best is None or found < best):
                best = found
    return best


def _slot(ctx: Context, queue: ItemQueue, usage: Usage, c: str, s: str, stop: datetime | None) -> datetime | None:
    """The pair's slot S (see module doc); None when there is none at or before `stop`."""
    groups = queue.groups(c, s)
    if not groups:
        return None
    floor = _lower_bound(ctx, usage, c, s)
    if isinstance(floor, _Never):
        return None
    return _slot_of(ctx, usage, (c, s), groups, floor, stop, queue.items)


def _slot_of(
    ctx: Context,
    usage: Usage,
    pair: tuple[str, str],
    groups: list[tuple[str, list[Pool]]],
    floor: datetime | None,
    stop: datetime | None,
    items: Mapping[str, QueueItem] | None = None,
) -> datetime | None:
    need_fire = ctx.campaigns[pair[0]].schedule.cron is not None
    return _earliest_over(ctx, usage, pair, groups, floor, need_fire, stop, items)


def _candidate(
    ctx: Context,
    queue: ItemQueue,
    usage: Usage,
    c: str,
    s: str,
    now: datetime,
    slot_known: bool = False,
    open_zones: dict[tuple[str, str], bool] | None = None,
) -> RankKey | None:
    """The item the pair would send at `now`, or None if it may not send now.

    Cheap checks (limits at `now`, an item due and in its window) come before the slot search.
    `slot_known`: this call already found the pair's slot at or before `now` and its limits open;
    only the best due item is looked for again (a limit that filled up since is caught when the
    pair is popped). `open_zones` memoises whether each (campaign, zone) window is open at `now`.
    """
    if not slot_known:
        if _limits_release(ctx, usage, c, s, now) != now:
            return None
        spec = ctx.campaigns[c].schedule
        if spec.cron is not None and next_fire_at_or_after(spec.cron, spec.timezone, now) != now:
            return None  # a cron schedule sends at its fire times only, even after downtime
    accept = None
    if _domain_limited(ctx, c):
        def accept(key: RankKey) -> bool:  # its recipient's domain may still get mail from this sender now
            return _domain_release(ctx, usage, c, s, queue.items[key[-1]].domain, now) == now
    best: RankKey | None = None
    for tz, pools in queue.groups(c, s):
        is_open = None if open_zones is None else open_zones.get((c, tz))
        if is_open is None:
            is_open = ctx.window(c, tz).contains(now)
            if open_zones is not None:
                open_zones[(c, tz)] = is_open
        if not is_open:
            continue
        for pool in pools:
            key = pool.best_due(now, accept)
            if key is not None and (best is None or key < best):
                best = key
    if best is None or (not slot_known and _slot(ctx, queue, usage, c, s, now) is None):
        return None
    return best


def _rotation_after(ctx: Context, usage: Usage, c: str) -> int:
    """Index in ``ctx.active_senders[c]`` of the sender that sent last (-1: none): rotation resumes
    after it."""
    senders = ctx.active_senders[c]
    last = usage.last_sender(c)
    if last in senders:
        return senders.index(last)
    # the last sender left the campaign: resume after the latest of those still in it
    latest: tuple[datetime, int] | None = None
    for index, s in enumerate(senders):
        send = usage.last_send(c, s)
        if send is not None and (latest is None or (send.at, index) > latest):
            latest = (send.at, index)
    return -1 if latest is None else latest[1]


def _campaign_rotation(ctx: Context, usage: Usage, c: str) -> dict[tuple[str, str], int]:
    """Round-robin order of campaign `c`'s senders, starting after the one that sent last."""
    senders = ctx.active_senders[c]
    after = _rotation_after(ctx, usage, c)
    return {(c, s): (index - after - 1) % len(senders) for index, s in enumerate(senders)}


def _first_in_rotation(ctx: Context, usage: Usage, c: str, alive: set[str], now: datetime) -> str | None:
    """The first of `alive` (senders of campaign `c`) in rotation order whose limits are open at
    `now`; those found full on the way are dropped from `alive` (limits only fill up within a call).

    What the per-pair heap does with a block of entries of one key, one per sender, ordered by
    rotation: it pops them in that order, drops each whose limits are full and sends with the first
    that is open.
    """
    senders = ctx.active_senders[c]
    count = len(senders)
    after = _rotation_after(ctx, usage, c)
    for step in range(1, count + 1):
        s = senders[(after + step) % count]
        if s not in alive:
            continue
        if _limits_release(ctx, usage, c, s, now) == now:
            return s
        alive.discard(s)
    return None


def _spaced(ctx: Context, c: str) -> bool:
    """Whether the campaign's pairs send at most once per instant: any schedule but one with no wait
    between sends (min = max = 0 seconds, "as fast as the limits allow"); cron and every_minutes
    always space sends, and a drawn wait of 0 s within a range still spaces sends by an instant."""
    spec = ctx.campaigns[c].schedule
    return spec.cron is not None or spec.every_minutes is not None or spec.max_wait_seconds != 0


def _may_repeat(ctx: Context, usage: Usage, c: str, s: str, now: datetime) -> bool:
    """Whether the pair may send again at `now`: its spacing after the send just made is zero."""
    if _spaced(ctx, c):
        return False
    bound = _lower_bound(ctx, usage, c, s)
    return not isinstance(bound, _Never) and (bound is None or bound <= now)


def _send_alone(now: datetime, queue: ItemQueue, ctx: Context, usage: Usage, c: str, s: str, owned: bool
                ) -> tuple[list[Assignment], Usage]:
    """:func:`send_now` when next_due found one pair able to send at `now`, its slot `now` (so its
    limits open at `now`, on this very usage), and it sends at most once per instant: its best due
    item (what the general loop does for that one pair, without its heap and rotation: a
    forecast's usual round)."""
    key = _candidate(ctx, queue, usage, c, s, now, True)
    if key is None:
        return [], usage
    item = queue.remove(key[-1])
    campaign = ctx.campaigns[c]
    usage = (usage.record_in_place if owned else usage.record)(
        campaign_id=c, sender_id=s, workspace_id=campaign.workspace_id, at=now,
        timezone=campaign.schedule.timezone, domain=item.domain)
    return [Assignment(item=item, sender_id=s, at=now)], usage


def send_now(
    now: datetime, queue: ItemQueue, ctx: Context, usage: Usage, limit: int | None = None, *, owned: bool = False,
    able: dict[tuple[str, str], bool] | None = None,
) -> tuple[list[Assignment], Usage]:
    """What goes at `now`, best item first; removes the items sent from `queue`.

    A pair sends once per instant, or again and again while its spacing is zero. Each send is
    applied to the usage before the next one is chosen, so limits shared between pairs (sender
    day, workspace month, campaign hour and day) hold inside one call, and the campaign's sender
    rotation moves on. The choice depends only on (queue, usage, now): a call stopped after
    `limit` sends and called again at the same `now` continues exactly where it stopped, so a
    tick that claims in bounded batches sends what one unbounded call (the forecast) sends.
    With `owned` (the caller's usage came from ``Usage.owned()`` and nobody else holds it) the
    sends are recorded in it in place, rather than in a copy per send. `able`: the only pairs
    that can send at `now`, as :func:`next_due` found them on this very queue and usage (the
    others are not weighed: their answer would be no), True for those whose slot it found to be
    `now` (their limits and slot need no second search).
    """
    # each campaign's sender rotation, worked out when one of its pairs is first weighed (and again
    # after each of its sends): a round usually weighs one or two pairs of all those planned
    if able is not None and len(able) == 1 and (limit is None or limit > 0):
        (c, s), known = next(iter(able.items()))
        if known and not _domain_limited(ctx, c) and _spaced(ctx, c):
            return _send_alone(now, queue, ctx, usage, c, s, owned)
    rotations: dict[str, dict[tuple[str, str], int]] = {}
    versions: dict[str, int] = dict.fromkeys(ctx.campaigns, 0)
    heap: list[tuple[RankKey, int, str, str, int]] = []
    # Pairs whose slot is known to be at or before `now`. Another pair's send cannot move a slot
    # earlier, and when it fills a shared limit the check at pop time catches it; so the slot
    # search runs again only for the pair that sent (its spacing starts anew).
    slotted: set[tuple[str, str]] = {pair for pair, known in able.items() if known} if able is not None else set()
    open_zones: dict[tuple[str, str], bool] = {}

    # A campaign's senders mostly compete for the same unpinned items: for a pair whose slot is known
    # and that has no pinned items, the candidate is the campaign's best unpinned due item, the
    # same for all of them; it is found once per change of the queue, not once per pair.
    shared: dict[str, tuple[int, RankKey | None]] = {}

    def weigh(c: str, s: str) -> RankKey | None:
        """The pair's candidate at `now` (None: it cannot send now, nor later in this call)."""
        if (c, s) in slotted and not queue.has_pinned(c, s) and not _domain_limited(ctx, c):
            memo = shared.get(c)
            if memo is None or memo[0] != queue.changes:
                memo = shared[c] = (queue.changes, _candidate(ctx, queue, usage, c, s, now, True, open_zones))
            key = memo[1]
        else:
            key = _candidate(ctx, queue, usage, c, s, now, (c, s) in slotted, open_zones)
        if key is not None:
            slotted.add((c, s))
        return key

    def push(c: str, s: str) -> None:
        key = weigh(c, s)
        if key is not None:
            rotation = rotations.get(c)
            if rotation is None:
                rotation = rotations[c] = _campaign_rotation(ctx, usage, c)
            heapq.heappush(heap, (key, rotation[(c, s)], c, s, versions[c]))

    # Campaigns weighed as one. When none of a campaign's weighed pairs has pinned items and it has
    # no per-domain limits, every pair's candidate is the same item (its best unpinned due item), so
    # an entry per pair forms a block of one key that no other campaign's entry can split (keys name
    # their campaign): popped in rotation order, the full ones dropped, the first open one sends;
    # after that send the whole block is stale and popped again at once, each pair pushed back with
    # the campaign's next best item and its new place in the rotation (with 32 senders, 32 pushes a
    # send). Here such a campaign has one entry, its key, and the set of its senders still in play:
    # the block's work is a walk in rotation order (:func:`_first_in_rotation`) and one look for the
    # next best item per send. Queues only lose items within a call, so such a campaign stays one;
    # the others keep an entry per pair. The same sends either way: tests/schedule/
    # test_send_now_equivalence.py plays both side by side.
    pooled: dict[str, set[str]] = {}
    weighed: dict[str, list[tuple[str, RankKey]]] = {}
    for c, s in ctx.pairs:
        if able is None or (c, s) in able:
            key = weigh(c, s)
            if key is not None:
                weighed.setdefault(c, []).append((s, key))
    for c, found in weighed.items():
        if not _domain_limited(ctx, c) and not any(queue.has_pinned(c, s) for s, _ in found):
            pooled[c] = {s for s, _ in found}
            heapq.heappush(heap, (found[0][1], -1, c, "", 0))
            continue
        rotation = rotations[c] = _campaign_rotation(ctx, usage, c)
        for s, key in found:
            heapq.heappush(heap, (key, rotation[(c, s)], c, s, versions[c]))

    used: set[tuple[str, str]] = set()
    sends: list[Assignment] = []
    while heap and (limit is None or len(sends) < limit):
        key, _, c, s, version = heapq.heappop(heap)
        alive = pooled.get(c)
        if alive is not None:
            chosen = _first_in_rotation(ctx, usage, c, alive, now)
            if chosen is None:
                continue  # shared limits filled up during this call: the campaign is done
            s = chosen
        else:
            if (c, s) in used:
                continue
            if version != versions[c] or key[-1] not in queue.items:
                push(c, s)  # the campaign moved on (an item went, the rotation turned): decide again
                continue
            if _limits_release(ctx, usage, c, s, now) != now:
                continue  # a shared limit filled up during this call
            if _domain_limited(ctx, c) and _domain_release(ctx, usage, c, s, queue.items[key[-1]].domain, now) != now:
                push(c, s)  # this recipient's domain filled up during this call: another domain may go
                continue
        item = queue.remove(key[-1])
        campaign = ctx.campaigns[c]
        usage = (usage.record_in_place if owned else usage.record)(
            campaign_id=c,
            sender_id=s,
            workspace_id=campaign.workspace_id,
            at=now,
            timezone=campaign.schedule.timezone,
            domain=item.domain,
        )
        sends.append(Assignment(item=item, sender_id=s, at=now))
        slotted.discard((c, s))
        if alive is not None:
            # the pair that sent is weighed again (its slot anew) if it may send again at once
            if not (_may_repeat(ctx, usage, c, s, now) and weigh(c, s) is not None):
                alive.discard(s)
            if alive:
                following = _candidate(ctx, queue, usage, c, next(iter(alive)), now, True, open_zones)
                if following is not None:
                    heapq.heappush(heap, (following, -1, c, "", 0))
            continue
        versions[c] += 1
        rotations.pop(c, None)  # the rotation moved on
        if _may_repeat(ctx, usage, c, s, now):
            push(c, s)
        else:
            used.add((c, s))
    return sends, usage


def _value(ctx: Context, queue: ItemQueue, usage: Usage, pair: tuple[str, str], groups: list[tuple[str, list[Pool]]],
           floor: datetime | None, after: datetime, stop: datetime | None) -> datetime | None:
    """The earliest moment >= `after` at which the pair could send (its slot, or when the slot already
    passed, the next open due moment); None when it is after `stop` or not foreseeable."""
    slot = _slot_of(ctx, usage, pair, groups, floor, stop, queue.items)
    if slot is not None and slot < after:  # slot already passed (downtime or contention): next open due moment
        need_fire = ctx.campaigns[pair[0]].schedule.cron is not None
        slot = _earliest_over(ctx, usage, pair, groups, after, need_fire, stop, queue.items)
    return slot


def next_due(now: datetime, queue: ItemQueue, ctx: Context, usage: Usage,
             able: dict[tuple[str, str], bool] | None = None) -> datetime | None:
    """The earliest moment strictly after `now` at which a call could send; None if none.

    Pairs are visited from the lowest possible answer up, so that the first answers found cut the
    other searches short; the result does not depend on the order. Each pair's value is the
    earliest moment after `now` it could send, so at the answer only the pairs whose value is the
    answer (or was not worked out, its lower bound being the answer) can send: when `able` is
    given, they are added to it (True: its slot is the answer, False: not worked out), for a
    :func:`send_now` at the answer to weigh only them.
    """
    after = now + _EPSILON
    todo: list[tuple[datetime, str, str, list[tuple[str, list[Pool]]], datetime | None]] = []
    for c, s in ctx.pairs:
        groups = queue.groups(c, s)
        if not groups:
            continue
        floor = _lower_bound(ctx, usage, c, s)
        if isinstance(floor, _Never):
            continue
        lowest = max(after, min(pool.min_due() for _, pools in groups for pool in pools))
        todo.append((lowest if floor is None else max(lowest, floor), c, s, groups, floor))
    todo.sort(key=lambda entry: entry[:3])
    best: datetime | None = None
    found: list[tuple[datetime, tuple[str, str], bool]] = []
    for lowest, c, s, groups, floor in todo:
        if best is not None and lowest >= best:
            if able is not None and lowest == best:
                found.append((lowest, (c, s), False))  # not worked out: it may send at the answer
                continue
            break
        slot = _value(ctx, queue, usage, (c, s), groups, floor, after, best)
        if slot is None:
            continue
        if best is None or slot < best:
            best = slot
        found.append((slot, (c, s), True))
    if able is not None:
        able.update((pair, known) for at, pair, known in found if at == best)
    return best


def _first_dues(groups: list[tuple[str, list[Pool]]]) -> tuple[datetime, ...]:
    """The earliest due time of each zone's pools: all a pair's slot search reads of its queue
    (without per-domain limits)."""
    firsts: list[datetime] = []
    for _, pools in groups:
        first = pools[0].min_due()
        for pool in pools[1:]:
            due = pool.min_due()
            if due < first:
                first = due
        firsts.append(first)
    return tuple(firsts)


_DAWN = datetime.min.replace(tzinfo=UTC)  # "work this pair out again": below every answer


class DueTracker:
    """:func:`next_due` for one queue played forward round after round (the forecast), without
    weighing every pair again at each round.

    Each pair keeps a lower bound on the earliest moment it could send, in a heap. Between rounds
    a pair's answer only moves later (another pair's send takes an item or fills a shared limit,
    its own send starts its spacing again, time passes), except when an item joins its queue or,
    for a sender warming up from no first send day, when that sender first sends: those pairs are
    worked out again (:meth:`added`, :meth:`sent`). So the answer is found by popping the lowest
    bounds and working out only those pairs, until the best answer found is below every bound
    left; the others keep their bounds. The answer equals :func:`next_due`'s whenever it is at or
    before `until` (later than that, the forecast stops either way, so this says None).
    """

    def __init__(self, ctx: Context, queue: ItemQueue, until: datetime) -> None:
        self._ctx = ctx
        self._queue = queue
        self._until = until
        self._heap: list[tuple[datetime, str, str]] = []
        self._bounds: dict[tuple[str, str], datetime] = {}  # each pair's live heap entry
        # pairs with no answer up to `until`: only an item joining or leaving their queue can change that
        self._parked: dict[str, set[tuple[str, str]]] = {}
        self._by_campaign: dict[str, list[tuple[str, str]]] = {}
        # A pair's answer as worked out, with the groups of its queue and their earliest due times
        # then. While those are the same (no pool of the campaign appeared or emptied, no earlier
        # item joined: that lowers the pair's bound and forgets this) and no limit is full at that
        # moment, the answer still holds: the moments before it were not open and cannot have
        # opened since (limits only fill up), and it is still open. Not under per-domain limits,
        # whose searches start from each domain's release.
        self._exact: dict[tuple[str, str], tuple[datetime, object, tuple[datetime, ...]]] = {}
        self._pairs = set(ctx.pairs)
        for pair in ctx.pairs:
            self._by_campaign.setdefault(pair[0], []).append(pair)
            self._lower(pair, _DAWN)
        self._warming = {sid for sid, sender in ctx.senders.items()
                         if sender.warmup is not None and sender.first_send_day is None}

    def _lower(self, pair: tuple[str, str], bound: datetime) -> None:
        kept = self._bounds.get(pair)
        if kept is None or bound < kept:
            self._exact.pop(pair, None)
            self._bounds[pair] = bound
            heapq.heappush(self._heap, (bound, pair[0], pair[1]))

    def added(self, item: QueueItem) -> None:
        """`item` joined the queue: the pairs that may send it could now send sooner."""
        if item.sender_id is None:
            pairs = self._by_campaign.get(item.campaign_id, [])
        else:
            pair = (item.campaign_id, item.sender_id)
            pairs = [pair] if pair in self._pairs else []
        for pair in pairs:
            self._parked.get(pair[0], set()).discard(pair)
            self._lower(pair, _DAWN)

    def sent(self, campaign_id: str, sender_id: str) -> None:
        """A send was recorded: items left the campaign's queue (its parked pairs are worked out
        again), and a warming sender's first send day may now be known (its limits grow)."""
        parked = self._parked.pop(campaign_id, None)
        for pair in parked or ():
            self._lower(pair, _DAWN)
        if sender_id in self._warming:
            self._warming.discard(sender_id)
            for pair in self._ctx.pairs:
                if pair[1] == sender_id:
                    self._lower(pair, _DAWN)

    def next_due(self, now: datetime, usage: Usage, able: dict[tuple[str, str], bool] | None = None
                 ) -> datetime | None:
        """:func:`next_due` (with `able` filled the same way) when its answer is at or before `until`."""
        ctx, queue, heap, bounds = self._ctx, self._queue, self._heap, self._bounds
        after = now + _EPSILON
        best: datetime | None = None
        found: list[tuple[datetime, tuple[str, str], tuple[datetime, object, tuple[datetime, ...]] | None]] = []
        unknown: list[tuple[str, str]] = []  # bound at the answer, not worked out
        while heap:
            bound, c, s = heap[0]
            pair = (c, s)
            if bounds.get(pair) != bound:
                heapq.heappop(heap)  # an entry replaced by a lower one
                continue
            lowest = max(bound, after)
            if best is not None and lowest >= best:
                if able is None or lowest != best:
                    break
                heapq.heappop(heap)
                unknown.append(pair)
                continue
            if lowest > self._until:
                break
            heapq.heappop(heap)
            del bounds[pair]
            stop = self._until if best is None else best
            value = None
            groups = queue.groups(c, s)
            kept = self._exact.pop(pair, None)
            if kept is not None and kept[0] == bound and bound >= after and kept[1] is groups \
                    and kept[2] == _first_dues(groups) and _limits_release(ctx, usage, c, s, bound) == bound:
                value = bound  # still exact (see _exact)
            elif groups:
                kept = None
                floor = _lower_bound(ctx, usage, c, s)
                if not isinstance(floor, _Never):
                    value = _value(ctx, queue, usage, pair, groups, floor, after, stop)
            if value is None:
                if stop is self._until:
                    self._parked.setdefault(c, set()).add(pair)
                else:
                    self._lower(pair, stop + _EPSILON)
                continue
            if best is None or value < best:
                best = value
            found.append((value, pair, kept))
        for value, pair, kept in found:
            self._lower(pair, value)
            if kept is not None:
                self._exact[pair] = kept
            elif not _domain_limited(ctx, pair[0]):
                groups = queue.groups(*pair)
                self._exact[pair] = (value, groups, _first_dues(groups))
        for pair in unknown:
            heapq.heappush(heap, (bounds[pair], pair[0], pair[1]))
        if able is not None and best is not None:
            able.update((pair, True) for value, pair, _ in found if value == best)
            able.update((pair, False) for pair in unknown)
        return best
