"""The projection framework: a changed version rebuilds at start-up; rebuilds report progress."""

from __future__ import annotations

from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from projections import contacts as contacts_model
from projections.base import projection_state
from tests.conftest import SECRET


async def test_changed_version_rebuilds_at_start(sqlite_url: str, clock: ManualClock) -> None:
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
        ws = (await e.create_workspace("w")).id
        await e.create_contact(ws, {"email": "a@corp.io"})
        async with e.store.write_engine.begin() as conn:  # simulate a read model gone stale
            await conn.execute(contacts_model.contacts.tables[0].delete())
    original = contacts_model.contacts.version
    contacts_model.contacts.version = original + 1
    try:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
            assert (await e.list_contacts(ws))["pagination"]["total"] == 1
            async with e.store.reading() as conn:
                versions = dict((await conn.execute(select(projection_state.c.name, projection_state.c.version)))
                                .all())
            assert versions["contacts"] == original + 1
    finally:
        contacts_model.contacts.version = original


async def test_rebuild_in_batches_reports_progress(sqlite_url: str, clock: ManualClock) -> None:
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
        ws = (await e.create_workspace("w")).id
        await e.import_contacts(ws, [{"email": f"p{i}@corp.io"} for i in range(25)])
        seen: list[tuple[int, int]] = []
        n = await e.projector.rebuild(e.store, batch_size=10, progress=lambda _s, done, total: seen.append(
            (done, total)))
        last = await e.store.last_position()
        assert n == last and seen[-1] == (last, last) and len(seen) == -(-last // 10)
        assert (await e.list_contacts(ws))["pagination"]["total"] == 25


async def test_set_based_inserts_equal_row_by_row_and_refuse_overlong_values(pg_url: str) -> None:
    """On PostgreSQL the hot INSERTs send all rows as arrays in one statement. The rows land as
    executemany would put them (constants included), and a value longer than its column is an
    error, never cut to fit (strings travel as text, not as VARCHAR(n), which would truncate)."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    from projections import tables as t
    from projections.base import insert_statement, metadata

    statement = insert_statement(t.lists, name="fixed")
    engine = create_async_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all, tables=[t.lists])
            cols = [c.name for c in t.lists.columns if c.name != "name"]
            rows = [tuple(f"lst_{i}" if c == "id" else ("ws_1" if c == "workspace_id" else "2026-01-05T08:00:00Z")
                          for c in cols) for i in range(3)]
            await statement.run(conn, rows)
            got = (await conn.execute(select(t.lists).order_by(t.lists.c.id))).mappings().all()
            assert [(r["id"], r["name"], r["workspace_id"]) for r in got] == [
                ("lst_0", "fixed", "ws_1"), ("lst_1", "fixed", "ws_1"), ("lst_2", "fixed", "ws_1")]
        too_long = [tuple("x" * 65 if c == "id" else v for c, v in zip(cols, rows[0], strict=True))]
        try:
            async with engine.begin() as conn:
                await statement.run(conn, too_long)
        except DBAPIError as exc:
            assert "too long" in str(exc)
        else:
            raise AssertionError("an over-long id was accepted")
    finally:
        await engine.dispose()
