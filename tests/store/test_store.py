"""The event store suite, run on each backend: a SQLite file, the in-memory store, PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from engine.clock import ManualClock
from events import (
    catalog,  # noqa: F401
    schema,
)
from events.catalog.contact import ContactCreated, ListCreated
from events.chain import verify_rows
from events.registry import Event, from_data, register, upcaster
from events.store import AppendBatch, ConcurrencyError, EventStore
from events.vault import Vault
from tests.conftest import pg_database

WS = "ws_test"


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Every backend :meth:`EventStore.open` chooses: the same behaviour is expected of each."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/engine.db"
    elif request.param == "memory":
        yield "sqlite+aiosqlite://"
    else:
        async with pg_database() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    s = await EventStore.open(store_url, Vault(b"k" * 32), clock.now)
    yield s
    await s.close()


def lst(i: int) -> ListCreated:
    return ListCreated(list_id=f"lst_{i}", name=f"list {i}")


async def test_append_and_read_stream(store: EventStore) -> None:
    stored = await store.append("list-1", [lst(1), lst(2)], 0, workspace_id=WS, metadata={"actor": "t"})
    assert [e.version for e in stored] == [1, 2]
    assert [e.position for e in stored] == [1, 2]
    back = await store.read_stream("list-1")
    assert [e.event for e in back] == [lst(1), lst(2)]
    assert back[0].metadata == {"actor": "t"}
    assert back[1].hash != back[0].hash


async def test_expected_version_conflict_appends_nothing(store: EventStore) -> None:
    await store.append("list-1", [lst(1)], 0, workspace_id=WS)
    with pytest.raises(ConcurrencyError):
        await store.append("list-1", [lst(2)], 0, workspace_id=WS)
    assert len(await store.read_stream("list-1")) == 1


async def test_multi_stream_append_is_atomic(store: EventStore) -> None:
    await store.append("list-b", [lst(1)], 0, workspace_id=WS)
    with pytest.raises(ConcurrencyError):
        await store.append_many([AppendBatch("list-a", [lst(1)], 0), AppendBatch("list-b", [lst(2)], 0)],
                                workspace_id=WS)
    assert await store.read_stream("list-a") == []
    ok = await store.append_many([AppendBatch("list-a", [lst(1)], 0), AppendBatch("list-b", [lst(2)], 1)],
                                 workspace_id=WS)
    assert [(e.stream, e.version) for e in ok] == [("list-a", 1), ("list-b", 2)]


async def test_read_all_pages_in_position_order(store: EventStore) -> None:
    for i in range(25):
        await store.append(f"list-{i % 3}", [lst(i)], None, workspace_id=WS if i % 2 else "ws_other")
    seen, after = [], 0
    while batch := await store.read_all(after, 7):
        seen.extend(e.position for e in batch)
        after = batch[-1].position
    assert seen == list(range(1, 26))
    mine = await store.read_all(0, 100, workspace_id=WS)
    assert all(e.workspace_id == WS for e in mine) and len(mine) == 12


async def test_events_table_refuses_update_and_delete(store: EventStore) -> None:
    await store.append("list-1", [lst(1)], 0, workspace_id=WS)
    for sql in ("UPDATE events SET data = '{}'", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only"):
            async with store.write_engine.begin() as conn:
                await conn.execute(text(sql))
    assert len(await store.read_stream("list-1")) == 1


async def test_two_concurrent_appends_at_same_version_one_conflict(store: EventStore) -> None:
    await store.append("list-1", [lst(0)], 0, workspace_id=WS)
    results = await asyncio.gather(
        store.append("list-1", [lst(1)], 1, workspace_id=WS),
        store.append("list-1", [lst(2)], 1, workspace_id=WS),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(conflicts) == 1, results
    assert len(await store.read_stream("list-1")) == 2


async def test_personal_fields_encrypted_and_erasable(store: EventStore) -> None:
    ev = ContactCreated(contact_id="con_1", email="ann@example.com", email_hash="h", email_domain="example.com",
                        first_name="Ann", last_name="Lee", company="Acme", timezone=None, custom_fields={"k": "v"})
    await store.append("contact-con_1", [ev], 0, workspace_id=WS)
    async with store.reading() as conn:
        raw = (await conn.execute(select(schema.events.c.data))).scalar_one()
    assert "ann@example.com" not in raw and "Ann" not in raw and "Acme" not in raw
    assert (await store.read_stream("contact-con_1"))[0].event == ev
    async with store.transaction() as conn:
        await store.erase_subject(conn, "con_1")
    erased = (await store.read_stream("contact-con_1"))[0].event
    assert isinstance(erased, ContactCreated)
    assert (erased.email, erased.first_name, erased.company, erased.custom_fields) == (None, None, None, None)
    assert erased.email_domain == "example.com"


async def test_hash_chain_verifies_and_detects_tampering(store: EventStore) -> None:
    await store.append("list-1", [lst(1), lst(2), lst(3)], 0, workspace_id=WS)

    async def check() -> object:
        async with store.reading() as conn:
            rows = (await conn.execute(select(schema.events).order_by(schema.events.c.stream,
                                                                      schema.events.c.version))).mappings().all()
            heads = {r[0]: (r[1], r[2]) for r in await conn.execute(
                select(schema.streams.c.stream, schema.streams.c.version, schema.streams.c.last_hash))}
        return verify_rows([dict(r) for r in rows], heads, key=store.vault.chain_key)

    assert await check() is None
    async with store.write_engine.begin() as conn:  # an attacker who can drop the triggers
        if store.dialect == "postgresql":
            await conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
            await conn.execute(text("UPDATE events SET data = replace(data, 'list 2', 'list X') WHERE version = 2"))
            await conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER events_no_update"))
            await conn.execute(text("UPDATE events SET data = replace(data, 'list 2', 'list X') WHERE version = 2"))
    problem = await check()
    assert problem is not None and problem.version == 2 and "altered" in problem.problem  # type: ignore[attr-defined]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class _Renamed(Event):
    TYPE = "test.renamed"
    VERSION = 2
    full_name: str


@upcaster("test.renamed", 1)
def _v1_to_v2(data: dict[str, object]) -> dict[str, object]:
    return {"full_name": f"{data.pop('first')} {data.pop('last')}"}


def test_upcaster_brings_v1_payload_to_current_version() -> None:
    ev = from_data("test.renamed", 1, {"first": "Ada", "last": "Lovelace"})
    assert ev == _Renamed(full_name="Ada Lovelace")
    assert from_data("test.renamed", 2, {"full_name": "X"}) == _Renamed(full_name="X")


async def test_existing_stream_appended_as_new_reports_its_version(store: EventStore) -> None:
    await store.append("list-1", [lst(1), lst(2)], 0, workspace_id=WS)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("list-1", [lst(3)], 0, workspace_id=WS)
    assert (caught.value.expected, caught.value.actual) == (0, 2)


def _raw_row(position: int, stream: str, version: int) -> dict[str, object]:
    return {"position": position, "stream": stream, "version": version, "type": "list.created", "type_version": 1,
            "data": "{}", "metadata": "{}", "recorded_at": "2026-01-05T08:00:00.000000Z", "workspace_id": WS,
            "hash": "f" * 64}


async def test_database_keeps_streams_gap_free_and_moves_heads(store: EventStore) -> None:
    """A writer that bypasses the store still cannot skip or repeat a version, and the head follows
    every insert: the triggers, not the store's Python, own the streams table."""
    await store.append("list-1", [lst(1)], 0, workspace_id=WS)
    for bad in (3, 1):  # a gap, then a repeated version
        with pytest.raises(IntegrityError):
            async with store.write_engine.begin() as conn:
                await conn.execute(schema.events.insert(), [_raw_row(10, "list-1", bad)])
    with pytest.raises(IntegrityError):  # a new stream must start at version 1
        async with store.write_engine.begin() as conn:
            await conn.execute(schema.events.insert(), [_raw_row(10, "list-9", 2)])
    async with store.write_engine.begin() as conn:  # several rows of one stream in one statement
        await conn.execute(schema.events.insert(), [_raw_row(2, "list-1", 2), _raw_row(3, "list-1", 3),
                                                    _raw_row(4, "list-2", 1)])
    async with store.reading() as conn:
        heads = {r[0]: (r[1], r[2]) for r in await conn.execute(
            select(schema.streams.c.stream, schema.streams.c.version, schema.streams.c.last_hash))}
    assert heads == {"list-1": (3, "f" * 64), "list-2": (1, "f" * 64)}
    assert await store.stream_version("list-1") == 3


async def test_batched_append_with_many_streams_and_workspaces(store: EventStore) -> None:
    """One append over more streams than one look-up chunk, two workspaces, new and old streams."""
    await store.append_many([AppendBatch(f"list-{i}", [lst(i)], 0) for i in range(0, 6000, 2)], workspace_id=WS)
    batch = [AppendBatch(f"list-{i}", [lst(i), lst(i + 1)], 1 if i % 2 == 0 else 0,
                         workspace_id=None if i % 3 else "ws_other") for i in range(6000)]
    stored = await store.append_many(batch, workspace_id=WS)
    assert len(stored) == 12000 and stored[-1].position == 15000
    assert await store.stream_version("list-5998") == 3 and await store.stream_version("list-5999") == 2
    assert [e.event for e in await store.read_stream("list-4")] == [lst(4), lst(4), lst(5)]
    async with store.reading() as conn:
        rows = (await conn.execute(select(schema.events).order_by(schema.events.c.stream,
                                                                  schema.events.c.version))).mappings().all()
        heads = {r[0]: (r[1], r[2]) for r in await conn.execute(
            select(schema.streams.c.stream, schema.streams.c.version, schema.streams.c.last_hash))}
    assert verify_rows([dict(r) for r in rows], heads, key=store.vault.chain_key) is None
    assert {e.workspace_id for e in stored if e.stream == "list-3"} == {"ws_other"}


async def test_read_all_filters_combine(store: EventStore) -> None:
    """Every filter of read_all, alone and together, on both backends (SQLite reads on the driver)."""
    contact = ContactCreated(contact_id="con_9", email="bo@example.com", email_hash="h", email_domain="example.com",
                             first_name="Bo", last_name=None, company=None, timezone=None, custom_fields=None)
    await store.append("list-1", [lst(1), lst(2)], 0, workspace_id=WS)
    await store.append("contact-con_9", [contact], 0, workspace_id=WS)
    await store.append("list-2", [lst(3)], 0, workspace_id="ws_other")
    await store.append("list-1", [lst(4)], 2, workspace_id=WS)

    async def positions(**kw: object) -> list[int]:
        return [e.position for e in await store.read_all(**kw)]  # type: ignore[arg-type]

    assert await positions() == [1, 2, 3, 4, 5]
    assert await positions(types=["contact.created"]) == [3]
    assert await positions(types=["list.created"], workspace_id=WS) == [1, 2, 5]
    assert await positions(stream="list-1", after=1) == [2, 5]
    assert await positions(until_position=4, workspace_id="ws_other") == [4]
    assert await positions(after=1, limit=2, until_position=9) == [2, 3]
    got = await store.read_all(2, 1)
    assert got[0].event == contact and got[0].workspace_id == WS and got[0].stream == "contact-con_9"
    async with store.reading() as conn:  # inside a caller's connection too
        assert [e.position for e in await store.read_all(0, 10, types=["list.created"], conn=conn)] == [1, 2, 4, 5]


def test_payload_with_fields_this_code_does_not_know_still_reads() -> None:
    """Written by newer code with an extra field: the field is left out, the event still reads."""
    ev = from_data("list.created", 1, {"list_id": "lst_1", "name": "A", "colour": "blue"})
    assert ev == ListCreated(list_id="lst_1", name="A")
    with pytest.raises(TypeError):  # a missing field is still an error
        from_data("list.created", 1, {"list_id": "lst_1"})
