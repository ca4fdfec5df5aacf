"""Spacing between sends of one (campaign, sender) pair, and each sender's limit for the day.

Every random choice is drawn from ``random.Random(seed)`` where the seed is a SHA-256 of the values
that identify the choice, never Python's ``hash()`` (salted per process). So the forecast, made
now, draws exactly the waits and limits the tick will draw later, on any machine.
"""

from __future__ import annotations

import _random
import hashlib
import random
import threading
from datetime import date, datetime, timedelta
from functools import lru_cache

from engine.schedule.cron import next_fire_after
from engine.schedule.model import LastSend, ScheduleSpec, SenderPlan

__all__ = ["effective_daily_limit", "next_allowed_at", "seeded_wait_seconds", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from `parts`, the same in every process and on every machine."""
    text = "\x1f".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


class _Generators(threading.local):
    """One generator per thread, re-seeded for each draw: ``_random.Random.seed`` with an integer is
    exactly what ``random.Random(seed)`` does, without building a generator (half the cost of a
    draw, and a forecast draws one per send)."""

    def __init__(self) -> None:
        self.rng = random.Random()


_GENERATORS = _Generators()
_SEED = _random.Random.seed


@lru_cache(maxsize=65_536)
def seeded_wait_seconds(
    campaign_id: str, sender_id: str, local_day: date, seq: int, min_wait: int, max_wait: int
) -> int:
    """The wait (whole seconds, min_wait..max_wait inclusive) after send number `seq` of `local_day`."""
    rng = _GENERATORS.rng
    _SEED(rng, stable_seed(campaign_id, sender_id, local_day.isoformat(), seq))
    return rng.randint(min_wait, max_wait)


def effective_daily_limit(sender: SenderPlan, utc_day: date, first_send_day: date | None = None) -> int | None:
    """`sender`'s limit for UTC day `utc_day`: daily_limit less a seeded 0..pct% cut, fixed all day,
    and during a warm-up never above ``min(start + N x increase_per_day, target)`` on day N after
    the sender's first send day (`first_send_day`, else the sender's own; day 0 when it has none).

    Never above daily_limit; the cut is whole emails, at most floor(daily_limit * pct / 100).
    None when the sender has neither a daily limit nor a warm-up.
    """
    limit = _varied_limit(sender, utc_day)
    if sender.warmup is None:
        return limit
    warm = sender.warmup.limit_on(utc_day, first_send_day or sender.first_send_day)
    return warm if limit is None else min(limit, warm)


def _varied_limit(sender: SenderPlan, utc_day: date) -> int | None:
    limit = sender.daily_limit
    if limit is None:
        return None
    pct = min(max(float(sender.daily_limit_variation_pct), 0.0), 100.0)
    max_cut = int(limit * pct // 100)
    if max_cut <= 0:
        return limit
    rng = random.Random(stable_seed(sender.sender_id, utc_day.isoformat()))
    return limit - rng.randint(0, max_cut)


def next_allowed_at(schedule: ScheduleSpec, campaign_id: str, sender_id: str, last: LastSend) -> datetime | None:
    """The earliest time the pair may send again after `last` (window and limits aside).

    ``cron`` wins: its next fire time strictly after the last send (None if it never fires again);
    then ``every_minutes``; else a seeded wait between min and max_wait_seconds, drawn from
    (campaign, sender, local date, number of the send within that date).
    """
    if schedule.cron is not None:
        return next_fire_after(schedule.cron, schedule.timezone, last.at)
    if schedule.every_minutes is not None:
        return last.at + timedelta(minutes=schedule.every_minutes)
    wait = seeded_wait_seconds(
        campaign_id,
        sender_id,
        last.local_date,
        last.seq,
        schedule.min_wait_seconds,
        schedule.max_wait_seconds,
    )
    return last.at + timedelta(seconds=wait)
