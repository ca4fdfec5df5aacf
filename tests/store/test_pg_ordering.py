"""On PostgreSQL, a reader following read_all never skips an event that commits late."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from engine.clock import ManualClock
from events import catalog  # noqa: F401
from events.catalog.contact import ListCreated
from events.store import EventStore
from events.vault import Vault

pytestmark = pytest.mark.postgres

WRITERS, APPENDS = 4, 500


async def test_follower_sees_every_event_once_in_order(pg_url: str) -> None:
    clock = ManualClock(datetime(2026, 1, 5, tzinfo=UTC))
    store = await EventStore.open(pg_url, Vault(b"k" * 32), clock.now)
    done = asyncio.Event()
    seen: list[int] = []

    async def writer(w: int) -> None:
        for i in range(APPENDS):
            await store.append(f"list-w{w}", [ListCreated(list_id=f"l{w}-{i}", name="n")], None, workspace_id="ws")

    async def follower() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read before the query: a read that began earlier may miss the last commit
            batch = await store.read_all(after, 200)
            seen.extend(e.position for e in batch)
            if batch:
                after = batch[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    try:
        reader = asyncio.create_task(follower())
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        done.set()
        await reader
        assert seen == list(range(1, WRITERS * APPENDS + 1))
        for w in range(WRITERS):
            versions = [e.version for e in await store.read_stream(f"list-w{w}")]
            assert versions == list(range(1, APPENDS + 1))
    finally:
        await store.close()
