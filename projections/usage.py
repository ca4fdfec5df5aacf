"""Sending usage as counters: what the limits and the spacing of the planner count, kept as events land.

The tick used to recount every email ever claimed to know how much a sender sent today; these
counters make that one indexed read of a few rows, whatever the length of the history.

``rm_usage_counts`` holds one row per (scope, owner, bucket):

==================  ===========  =====================================================
scope               owner        bucket
==================  ===========  =====================================================
``sender_day``      sender id    UTC calendar day (``2026-01-05``)
``campaign_day``    campaign id  calendar day in the campaign's timezone at claim time
``campaign_hour``   campaign id  UTC start of the local hour (``format_time``)
``workspace_month`` workspace    UTC calendar month (``2026-01``)
==================  ===========  =====================================================

A claim counts +1 in each of its four buckets; a deferral (nothing was delivered) or a release
(no SMTP was spoken) counts -1 in the buckets of the claim it undoes. ``rm_usage_last_sends``
keeps each (campaign, sender) pair's latest claim and its number within that local day (it seeds
the next random wait; a deferral does not undo it: the pair's spacing counts from the attempt).
``rm_usage_rotation`` keeps the sender of each campaign's latest claim, where round-robin resumes.

Buckets are computed from event data only (the claim's time and the timezone it carries), so a
rebuild gives the same rows as the inline path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Integer, String, Table, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time, parse_time
from events.store import StoredEvent
from projections.base import Projection, metadata

counts = Table(
    "rm_usage_counts", metadata,
    Column("scope", String(16), primary_key=True),
    Column("owner", String(64), primary_key=True),
    Column("bucket", String(32), primary_key=True),
    Column("sends", Integer, nullable=False),
)

last_sends = Table(
    "rm_usage_last_sends", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("sender_id", String(64), primary_key=True),
    Column("at", String(32), nullable=False),
    Column("local_day", String(10), nullable=False),
    Column("seq", Integer, nullable=False),
)

rotation = Table(
    "rm_usage_rotation", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("sender_id", String(64), nullable=False),
)

# Version 3: per sender and recipient domain, by the campaign's local hour and day.
usage = Projection("usage", 3, [counts, last_sends, rotation])

SENDER_DAY = "sender_day"
CAMPAIGN_DAY = "campaign_day"
CAMPAIGN_HOUR = "campaign_hour"
WORKSPACE_MONTH = "workspace_month"
DOMAIN_HOUR = "domain_hour"  # owner: "<sender id>|<recipient domain>"
DOMAIN_DAY = "domain_day"

Bucket = tuple[str, str, str]

_ADD = text("INSERT INTO rm_usage_counts (scope, owner, bucket, sends) VALUES (:scope, :owner, :bucket, :sends) "
            "ON CONFLICT (scope, owner, bucket) DO UPDATE SET sends = rm_usage_counts.sends + excluded.sends")
_LAST = text("INSERT INTO rm_usage_last_sends (campaign_id, sender_id, at, local_day, seq) "
             "VALUES (:campaign_id, :sender_id, :at, :local_day, :seq) "
             "ON CONFLICT (campaign_id, sender_id) DO UPDATE SET at = excluded.at, "
             "local_day = excluded.local_day, seq = excluded.seq")
_ROTATION = text("INSERT INTO rm_usage_rotation (campaign_id, sender_id) VALUES (:campaign_id, :sender_id) "
                 "ON CONFLICT (campaign_id) DO UPDATE SET sender_id = excluded.sender_id")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # an unknown name: count in UTC rather than lose the claim
        return ZoneInfo("UTC")


def local_buckets(at: datetime, timezone: str) -> tuple[str, str]:
    """(local calendar day, UTC start of the local hour) of instant `at` in `timezone`.

    The hour is found by subtracting the local minutes and seconds from the instant, so the two
    hours that share a wall label on a fall-back night are two buckets (as the planner counts).
    """
    local = at.astimezone(_zone(timezone))
    start = at.astimezone(UTC) - timedelta(minutes=local.minute, seconds=local.second,
                                           microseconds=local.microsecond)
    return local.date().isoformat(), format_time(start)


def domain_owner(sender_id: str, domain: str) -> str:
    return f"{sender_id}|{domain}"


def buckets_of(at: datetime, timezone: str, campaign_id: str, sender_id: str, workspace_id: str,
               domain: str | None = None) -> list[Bucket]:
    """The buckets one claim at `at` counts in (and its recipient domain's two, when known)."""
    utc = at.astimezone(UTC)
    day, hour = local_buckets(utc, timezone)
    found = [(SENDER_DAY, sender_id, utc.date().isoformat()), (CAMPAIGN_DAY, campaign_id, day),
             (CAMPAIGN_HOUR, campaign_id, hour), (WORKSPACE_MONTH, workspace_id, f"{utc.year:04d}-{utc.month:02d}")]
    if domain:
        owner = domain_owner(sender_id, domain)
        found += [(DOMAIN_HOUR, owner, hour), (DOMAIN_DAY, owner, day)]
    return found


async def _add(conn: AsyncConnection, deltas: dict[Bucket, int]) -> None:
    rows = [{"scope": scope, "owner": owner, "bucket": bucket, "sends": n}
            for (scope, owner, bucket), n in deltas.items() if n]
    if rows:
        await conn.execute(_ADD, rows)


@usage.on("email.claimed")
async def _claimed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    deltas: dict[Bucket, int] = {}
    pairs: dict[tuple[str, str], tuple[datetime, str, int]] = {}
    latest_sender: dict[str, str] = {}
    claims: list[tuple[Any, datetime, str]] = []
    for stored in evs:
        event: Any = stored.event
        at = stored.recorded_at
        for bucket in buckets_of(at, event.timezone, event.campaign_id, event.sender_id, stored.workspace_id,
                                 event.recipient_domain):
            deltas[bucket] = deltas.get(bucket, 0) + 1
        claims.append((event, at, local_buckets(at, event.timezone)[0]))
        pairs[(event.campaign_id, event.sender_id)] = (at, "", 0)
    known = {(row[0], row[1]): (parse_time(row[2]), row[3], int(row[4])) for row in (await conn.execute(
        select(last_sends.c.campaign_id, last_sends.c.sender_id, last_sends.c.at, last_sends.c.local_day,
               last_sends.c.seq).where(tuple_(last_sends.c.campaign_id, last_sends.c.sender_id).in_(list(pairs)))
    )).all()}
    for event, at, day in claims:
        key = (event.campaign_id, event.sender_id)
        previous = known.get(key)
        if previous is not None and at < previous[0]:
            continue  # an older claim (clock moved back): the pair's latest stays
        seq = previous[2] + 1 if previous is not None and previous[1] == day else 1
        known[key] = (at, day, seq)
        pairs[key] = (at, day, seq)
        latest_sender[event.campaign_id] = event.sender_id
    await _add(conn, deltas)
    await conn.execute(_LAST, [{"campaign_id": c, "sender_id": s, "at": format_time(at), "local_day": day, "seq": seq}
                               for (c, s), (at, day, seq) in pairs.items() if day])
    await conn.execute(_ROTATION, [{"campaign_id": c, "sender_id": s} for c, s in latest_sender.items()])


@usage.on("email.deferred", "email.released", "email.quarantined")
async def _deferred(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    deltas: dict[Bucket, int] = {}
    for stored in evs:
        event: Any = stored.event
        if event.claimed_at is None:
            continue  # written before claims were counted here: its claim time is unknown
        for bucket in buckets_of(event.claimed_at, event.timezone or "UTC", event.campaign_id, event.sender_id,
                                 stored.workspace_id, event.recipient_domain):
            deltas[bucket] = deltas.get(bucket, 0) - 1
    await _add(conn, deltas)
