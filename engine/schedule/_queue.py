"""The planner's view of the queue: items grouped and kept sorted, so each decision is cheap.

Items are grouped by (campaign, pinned sender or None, zone of their window). Within a group they
are kept in priority order and in due order. ``plan()`` builds a fresh queue for each call; the
forecast keeps one across calls and adds follow-ups to it. Both orders are total (the email id is
the last tie-break), so a queue built at once and one built incrementally are identical.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from datetime import datetime

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
    """Items of one (campaign, pin, zone), in rank order and in due order."""

    __slots__ = ("dues", "ranked")

    def __init__(self) -> None:
        self.ranked: list[RankKey] = []
        self.dues: list[tuple[datetime, str]] = []

    def add(self, item: QueueItem) -> None:
        insort(self.ranked, rank_key(item))
        insort(self.dues, (item.due_at, item.email_id))

    def remove(self, item: QueueItem) -> None:
        key = rank_key(item)
        del self.ranked[bisect_left(self.ranked, key)]
        due = (item.due_at, item.email_id)
        del self.dues[bisect_left(self.dues, due)]

    def __len__(self) -> int:
        return len(self.ranked)

    def min_due(self) -> datetime:
        return self.dues[0][0]

    def best_due(self, now: datetime, accept: Callable[[RankKey], bool] | None = None) -> RankKey | None:
        """The best-ranked item already due at `now` (and that `accept` lets go, when given)."""
        if self.dues[0][0] > now:
            return None
        for key in self.ranked:
            if key[1] <= now and (accept is None or accept(key)):
                return key
        return None


class ItemQueue:
    """Items the planner may send, indexed by campaign, pinned sender and window zone."""

    def __init__(self) -> None:
        self.items: dict[str, QueueItem] = {}
        self._zones: dict[str, str] = {}
        self._pools: dict[str, dict[tuple[str | None, str], Pool]] = {}
        # groups() per (campaign, sender), valid while no pool of the campaign is created or emptied
        self._groups: dict[tuple[str, str], list[tuple[str, list[Pool]]]] = {}
        self.changes = 0  # bumped by every add and remove: memos of "the best item" key on it

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
            self._forget_groups(item.campaign_id)
        pool.add(item)

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
            if not pools:
                del self._pools[item.campaign_id]
        return item

    def has_pinned(self, campaign_id: str, sender_id: str) -> bool:
        """Whether some queued item of the campaign is pinned to this sender."""
        return any(pin == sender_id for pin, _ in self._pools.get(campaign_id, {}))

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
