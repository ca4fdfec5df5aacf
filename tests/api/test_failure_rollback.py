"""A request that fails after validation leaves nothing behind: the whole command rolls back.

Given a read-model handler that fails inside the append's transaction (forced here: the store
runs every inline projection in the same transaction as the events); when a contact is created
through the API; then the answer is a 500 in the JSON envelope with a request id, no event was
appended and no row was written; once the fault is gone the same request succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import func, select

from engine import CampaignEngine, create_app
from events import schema
from projections import tables
from tests.conftest import Api


async def test_a_failing_command_commits_nothing(engine: CampaignEngine) -> None:
    ws = await engine.create_workspace("acme")
    # as a server answers: the error becomes the answer instead of reaching the test
    transport = httpx.ASGITransport(app=create_app(engine), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    api = Api(client, ws.id, ws.api_key)
    contacts = next(p for p in engine.projector.projections if "contact.created" in p.handlers)
    original = contacts.handlers["contact.created"]

    async def broken(conn: Any, events: Sequence[Any]) -> None:
        await original(conn, events)  # the rows are written in the transaction...
        raise RuntimeError("disk on fire")  # ...and then the command fails

    before = await engine.store.last_position()
    contacts.handlers["contact.created"] = broken
    try:
        answer = await api.post("/v1/contacts", json={"email": "ann@corp.io"})
    finally:
        contacts.handlers["contact.created"] = original
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error" and answer.json()["error"]["details"]["request_id"]
    assert await engine.store.last_position() == before
    async with engine.store.reading() as conn:
        rows = (await conn.execute(select(func.count()).select_from(tables.contacts))).scalar()
        events = (await conn.execute(select(func.count()).select_from(schema.events).where(
            schema.events.c.type == "contact.created"))).scalar()
    assert rows == 0 and events == 0
    assert (await api.post("/v1/contacts", json={"email": "ann@corp.io"})).status_code == 201
    await client.aclose()
