"""The planner's view of the queue: items grouped and kept sorted, so each decision is cheap.

Items are grouped by (campaign, pinned sender or None, zone of their window). Within a group they
are kept in priority order and in due order. ``plan()`` builds a fresh queue for each call; the
forecast keeps one across calls and adds follow-ups to it. Both orders are total (the email id is
the last tie-break), so a queue built at once and one built incrementally are identical.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from engine.schedule.model import QueueItem

__all__ = ["ItemQueue", "Pool", "RankKey", "rank_key"]

# (-priority, due_at, seq, campaign_id, enrollment_id, step, email_id): smaller goes first.
RankKey = tuple[int, datetime, int, str, str, int, str]


def rank_key(item: QueueItem) -> RankKey:
    """Priority (higher first), then due_at, then seq; ids only break the remaining ties.

    The campaign, enrollment and step come before the email id so that a forecast, which must
    invent ids for emails not yet scheduled, orders items exactly as the tick will.
    """
    return (
        -item.priority,
        item.due_at,
        item.seq,
        item.campaign_id,
        item.enrollment_id,
        item.step,
        item.email_id,
    )


class Pool:
    """Items of one (campaign, pin, zone), in rank order and in due order.

    The best item is the one that goes, so removals are mostly at the front of both lists: those
    only move a head index (deleting the first of tens of thousands of entries shifts them all),
    and the dead prefix is dropped once it is half the list.
    """

    __slots__ = ("_due_head", "_dues", "_rank_head", "_ranked")

    def __init__(self) -> None:
        self._ranked: list[RankKey] = []
        self._dues: list[tuple[datetime, str]] = []
        self._rank_head = 0
        self._due_head = 0

    def add(self, item: QueueItem) -> None:
        insort(self._ranked, rank_key(item), lo=self._rank_head)
        insort(self._dues, (item.due_at, item.email_id), lo=self._due_head)

    def fill(self, items: list[QueueItem]) -> None:
        """Add `items` to an empty pool: one sort of each list, instead of an insertion per item."""
        assert not self._ranked, "fill() starts a pool"
        self._ranked = sorted(rank_key(item) for item in items)
        self._dues = sorted((item.due_at, item.email_id) for item in items)

    def remove(self, item: QueueItem) -> None:
        self._rank_head = _drop(self._ranked, self._rank_head, rank_key(item))
        self._due_head = _drop(self._dues, self._due_head, (item.due_at, item.email_id))

    def __len__(self) -> int:
        return len(self._ranked) - self._rank_head

    def min_due(self) -> datetime:
        return self._dues[self._due_head][0]

    def dues(self) -> Iterator[tuple[datetime, str]]:
        """(due_at, email_id) of every item, earliest first."""
        dues = self._dues
        return (dues[index] for index in range(self._due_head, len(dues)))  # islice would walk the dead prefix

    def best_due(self, now: datetime, accept: Callable[[RankKey], bool] | None = None) -> RankKey | None:
        """The best-ranked item already due at `now` (and that `accept` lets go, when given)."""
        if self._dues[self._due_head][0] > now:
            return None
        ranked = self._ranked
        for index in range(self._rank_head, len(ranked)):
            key = ranked[index]
            if key[1] <= now and (accept is None or accept(key)):
                return key
        return None


def _drop(entries: list[Any], head: int, entry: object) -> int:
    """Remove `entry` from the sorted live part ``entries[head:]``; returns the new head."""
    index = head if entries[head] == entry else bisect_left(entries, entry, lo=head)  # mostly the first
    if index != head:
        del entries[index]
        return head
    head += 1
    if head * 2 > len(entries):
        del entries[:head]
        return 0
    return head


class ItemQueue:
    """Items the planner may send, indexed by campaign, pinned sender and window zone."""

    def __init__(self) -> None:
        self.items: dict[str, QueueItem] = {}
        self._zones: dict[str, str] = {}
        self._pools: dict[str, dict[tuple[str | None, str], Pool]] = {}
        # groups() per (campaign, sender), valid while no pool of the campaign is created or emptied
        self._groups: dict[tuple[str, str], list[tuple[str, list[Pool]]]] = {}
        self.changes = 0  # bumped by every add and remove: memos of "the best item" key on it
        self._pins: dict[tuple[str, str], int] = {}  # pools per (campaign, pinned sender)

    def add(self, item: QueueItem, tz: str) -> None:
        """Add `item`, whose window is read in zone `tz`. An email id already queued is replaced."""
        if item.email_id in self.items:
            self.remove(item.email_id)
        self.changes += 1
        self.items[item.email_id] = item
        self._zones[item.email_id] = tz
        pools = self._pools.setdefault(item.campaign_id, {})
        pool = pools.get((item.sender_id, tz))
        if pool is None:
            pool = pools[(item.sender_id, tz)] = Pool()
            self._pool_made(item.campaign_id, item.sender_id)
        pool.add(item)

    def fill(self, entries: list[tuple[QueueItem, str]]) -> None:
        """Add (item, zone) `entries` with distinct email ids to an empty queue, in their order: the
        same queue as adding them one by one, with one sort per pool instead of an insertion per item
        (a forecast starts from tens of thousands)."""
        assert not self.items, "fill() starts a queue"
        members: dict[Pool, list[QueueItem]] = {}
        for item, tz in entries:
            self.items[item.email_id] = item
            self._zones[item.email_id] = tz
            pools = self._pools.setdefault(item.campaign_id, {})
            pool = pools.get((item.sender_id, tz))
            if pool is None:
                pool = pools[(item.sender_id, tz)] = Pool()
                self._pool_made(item.campaign_id, item.sender_id)
                members[pool] = []
            members[pool].append(item)
        for pool, items in members.items():
            pool.fill(items)
        self.changes += len(entries)

    def remove(self, email_id: str) -> QueueItem:
        item = self.items.pop(email_id)
        self.changes += 1
        tz = self._zones.pop(email_id)
        pools = self._pools[item.campaign_id]
        key = (item.sender_id, tz)
        pools[key].remove(item)
        if not pools[key]:
            del pools[key]
            self._forget_groups(item.campaign_id)
            if item.sender_id is not None:
                self._pins[(item.campaign_id, item.sender_id)] -= 1
            if not pools:
                del self._pools[item.campaign_id]
        return item

    def has_pinned(self, campaign_id: str, sender_id: str) -> bool:
        """Whether some queued item of the campaign is pinned to this sender."""
        return self._pins.get((campaign_id, sender_id), 0) > 0

    def _pool_made(self, campaign_id: str, pin: str | None) -> None:
        self._forget_groups(campaign_id)
        if pin is not None:
            self._pins[(campaign_id, pin)] = self._pins.get((campaign_id, pin), 0) + 1

    def _forget_groups(self, campaign_id: str) -> None:
        for key in [k for k in self._groups if k[0] == campaign_id]:
            del self._groups[key]

    def groups(self, campaign_id: str, sender_id: str) -> list[tuple[str, list[Pool]]]:
        """Pools a (campaign, sender) pair may draw from (pinned to it, or unpinned), by zone.

        Kept until a pool of the campaign appears or empties: the planner asks for the same
        groups for every send it weighs, and their pools change far less often.
        """
        found = self._groups.get((campaign_id, sender_id))
        if found is None:
            by_zone: dict[str, list[Pool]] = {}
            for (pin, tz), pool in self._pools.get(campaign_id, {}).items():
                if pin is None or pin == sender_id:
                    by_zone.setdefault(tz, []).append(pool)
            found = self._groups[(campaign_id, sender_id)] = sorted(by_zone.items())
        return found
