"""The in-memory store: the real log (versions, chain, encryption, inline projections) with nothing on disk.

The store's own behaviour is checked on it by ``test_store.py`` beside the SQLite file and
PostgreSQL; here, what is particular to it: the URLs that open it, that two of them never share a
log, that closing it leaves nothing behind, and that an engine on it runs commands through the same
projector, so its read models equal a rebuild from its events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from events import schema
from events.backends.memory import MemoryEventStore
from events.backends.postgres import PostgresEventStore
from events.backends.sqlite import SqliteEventStore
from events.catalog.contact import ListCreated
from events.chain import verify_rows
from events.store import ConcurrencyError, EventStore, is_memory_url
from events.vault import Vault
from tests.conftest import SECRET, snapshot

WS = "ws_mem"


def clock_now() -> datetime:
    return datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:",
                                 "sqlite+aiosqlite:///:memory:?timeout=5"])
async def test_in_memory_urls_open_the_memory_store_and_close_leaves_nothing(url: str) -> None:
    store = await EventStore.open(url, Vault(b"k" * 32), clock_now)
    assert isinstance(store, MemoryEventStore) and store.dialect == "sqlite"
    folder = Path(str(store.folder))
    assert folder.is_dir()
    await store.close()
    assert not folder.exists()


def test_the_url_chooses_the_backend_and_an_unknown_one_is_refused() -> None:
    assert is_memory_url("sqlite+aiosqlite://") and is_memory_url("sqlite+aiosqlite:///:memory:")
    assert not is_memory_url("sqlite+aiosqlite:///mail.db") and not is_memory_url("postgresql+asyncpg://h/db")
    assert issubclass(MemoryEventStore, SqliteEventStore) and not issubclass(PostgresEventStore, SqliteEventStore)


async def test_an_unknown_database_url_is_refused_before_anything_opens() -> None:
    with pytest.raises(ValueError, match="no event store for this database URL: 'mysql"):
        await EventStore.open("mysql+aiomysql://u@h/db", Vault(b"k" * 32), clock_now)


async def test_a_bad_timeout_is_refused_at_open() -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        await EventStore.open("sqlite+aiosqlite://?timeout=soon", Vault(b"k" * 32), clock_now)


async def test_two_memory_stores_never_share_a_log() -> None:
    first = await EventStore.open("sqlite+aiosqlite://", Vault(b"k" * 32), clock_now)
    second = await EventStore.open("sqlite+aiosqlite://", Vault(b"k" * 32), clock_now)
    try:
        await first.append("list-1", [ListCreated(list_id="lst_1", name="one")], 0, workspace_id=WS)
        assert await second.read_stream("list-1") == []
        await second.append("list-1", [ListCreated(list_id="lst_1", name="other")], 0, workspace_id=WS)
        assert [e.event.name for e in await first.read_stream("list-1")] == ["one"]  # type: ignore[attr-defined]
    finally:
        await first.close()
        await second.close()


async def test_appends_are_checked_and_chained_as_in_a_file() -> None:
    store = await EventStore.open("sqlite+aiosqlite://", Vault(b"k" * 32), clock_now)
    try:
        await store.append("list-1", [ListCreated(list_id="lst_1", name="a"), ListCreated(list_id="lst_2", name="b")],
                           0, workspace_id=WS)
        with pytest.raises(ConcurrencyError):
            await store.append("list-1", [ListCreated(list_id="lst_3", name="c")], 1, workspace_id=WS)
        async with store.reading() as conn:
            rows = (await conn.execute(select(schema.events).order_by(schema.events.c.stream,
                                                                      schema.events.c.version))).mappings().all()
            heads = {row[0]: (row[1], row[2]) for row in await conn.execute(
                select(schema.streams.c.stream, schema.streams.c.version, schema.streams.c.last_hash))}
        assert [row["version"] for row in rows] == [1, 2]
        assert verify_rows([dict(row) for row in rows], heads, key=store.vault.chain_key) is None
    finally:
        await store.close()


async def test_an_engine_on_the_memory_store_keeps_its_read_models_by_the_same_projector() -> None:
    clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    async with CampaignEngine("sqlite+aiosqlite://", clock=clock, secret_key=SECRET) as engine:
        assert isinstance(engine.store, MemoryEventStore)
        # given a workspace with a list
        ws = (await engine.create_workspace("acme")).id
        list_id = (await engine.create_list(ws, {"name": "leads"}))["id"]
        # when contacts are imported into it, then one is created on its own
        await engine.import_contacts(ws, [{"email": f"p{i}@corp.io"} for i in range(30)], list_id=list_id)
        await engine.create_contact(ws, {"email": "solo@corp.io", "first_name": "Solo"})
        # then the read models show them, personal fields decrypted
        listed = await engine.list_contacts(ws, per_page=100)
        assert listed["pagination"]["total"] == 31
        assert {"solo@corp.io", "p0@corp.io"} <= {row["email"] for row in listed["data"]}
        assert (await engine.list_contacts(ws, q="solo"))["data"][0]["first_name"] == "Solo"
        # and what the inline projector built equals a rebuild from the events
        inline = await snapshot(engine)
        await engine.projector.rebuild(engine.store)
        assert await snapshot(engine) == inline
