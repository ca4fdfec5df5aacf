"""The projection framework: a changed version rebuilds at start-up; rebuilds report progress."""

from __future__ import annotations

from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from projections import management
from projections.base import projection_state
from tests.conftest import SECRET


async def test_changed_version_rebuilds_at_start(sqlite_url: str, clock: ManualClock) -> None:
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
        ws = (await e.create_workspace("w")).id
        await e.create_contact(ws, {"email": "a@corp.io"})
        async with e.store.write_engine.begin() as conn:  # simulate a read model gone stale
            await conn.execute(management.contacts.tables[0].delete())
    original = management.contacts.version
    management.contacts.version = original + 1
    try:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
            assert (await e.list_contacts(ws))["pagination"]["total"] == 1
            async with e.store.reading() as conn:
                versions = dict((await conn.execute(select(projection_state.c.name, projection_state.c.version)))
                                .all())
            assert versions["contacts"] == original + 1
    finally:
        management.contacts.version = original


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
