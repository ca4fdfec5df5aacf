"""REST: API keys listed, created (shown once), revoked (401 at once; never the last one); unique workspace names."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from engine import CampaignEngine, ManualClock
from engine.errors import Conflict
from events import schema
from events.registry import from_data
from tests.conftest import SECRET, Api, snapshot


async def event_count(engine: CampaignEngine) -> int:
    async with engine.store.reading() as c:
        return int((await c.execute(select(func.count()).select_from(schema.events))).scalar() or 0)


def code(r: Any) -> str:
    return str(r.json()["error"]["code"])


async def test_list_create_and_revoke(api: Api, engine: CampaignEngine) -> None:
    listed = (await api.get("/v1/api_keys")).json()
    assert len(listed) == 1
    first = listed[0]
    assert set(first) == {"id", "name", "prefix", "created_at", "last_used_at"}
    assert first["id"].startswith("key_") and first["name"] == "initial" and first["prefix"] == api.key[:8]
    assert api.key not in str(listed)

    r = await api.post("/v1/api_keys", json={"name": "ci deploy"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"].startswith("key_") and created["name"] == "ci deploy" and created["key"].startswith("ce_")
    assert created["prefix"] == created["key"][:8]
    second = Api(api.client, api.ws_id, created["key"])
    assert (await second.get("/v1/account")).json()["id"] == api.ws_id
    listed = (await second.get("/v1/api_keys")).json()
    assert [k["name"] for k in listed] == ["initial", "ci deploy"]
    assert created["key"] not in str(listed)

    # revoked: 401 from the next request on; the revocation is an event naming the key that made it
    r = await second.delete(f"/v1/api_keys/{first['id']}")
    assert r.status_code == 200 and r.json() == {"id": first["id"], "revoked": True}
    r = await api.get("/v1/account")
    assert r.status_code == 401 and code(r) == "unauthorized"
    events = await engine.store.read_stream(f"workspace-{api.ws_id}")
    assert [e.type for e in events] == ["workspace.created", "api_key.created", "api_key.created", "api_key.revoked"]
    assert events[2].metadata["actor"] == f"api_key:{first['id']}"
    assert events[3].metadata["actor"] == f"api_key:{created['id']}"
    assert events[3].event.key_id == first["id"]  # type: ignore[attr-defined]

    # the last key cannot go; a revoked or unknown key is 404; nothing is appended by refusals
    before = await event_count(engine)
    r = await second.delete(f"/v1/api_keys/{created['id']}")
    assert r.status_code == 409 and code(r) == "last_api_key"
    r = await second.delete(f"/v1/api_keys/{first['id']}")
    assert r.status_code == 404 and code(r) == "not_found"
    assert (await second.delete("/v1/api_keys/key_nope")).status_code == 404
    assert await event_count(engine) == before
    assert (await second.get("/v1/account")).status_code == 200


async def test_keys_are_per_workspace(api: Api, other_api: Api) -> None:
    mine = (await api.get("/v1/api_keys")).json()[0]["id"]
    theirs = (await other_api.get("/v1/api_keys")).json()
    assert [k["id"] for k in theirs] != [mine]
    await api.post("/v1/api_keys", json={"name": "spare"})  # so that "last key" is not what answers
    r = await other_api.delete(f"/v1/api_keys/{mine}")
    assert r.status_code == 404
    assert (await api.get("/v1/account")).status_code == 200
    assert (await api.client.get("/v1/api_keys")).status_code == 401


async def test_create_validation(api: Api, engine: CampaignEngine) -> None:
    before = await event_count(engine)
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": "x" * 256}, {"name": "ok", "scope": "all"},
                 ["name"]):
        r = await api.post("/v1/api_keys", json=body)
        assert r.status_code == 422 and code(r) == "validation_failed", (body, r.text)
    r = await api.post("/v1/api_keys", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and code(r) == "bad_request"
    assert await event_count(engine) == before


async def test_idempotent_create_never_shows_the_key_twice(api: Api, engine: CampaignEngine) -> None:
    headers = {"Idempotency-Key": "create-ci-key"}
    first = await api.post("/v1/api_keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == 201 and first.json()["key"].startswith("ce_")
    before = await event_count(engine)
    again = await api.post("/v1/api_keys", json={"name": "ci"}, headers=headers)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == {**first.json(), "key": None}
    assert await event_count(engine) == before
    async with engine.store.reading() as c:
        stored = " ".join(str(v) for v in (await c.execute(select(schema.idempotency.c.response))).scalars())
    assert first.json()["key"] not in stored
    other = await api.post("/v1/api_keys", json={"name": "other"}, headers=headers)
    assert other.status_code == 409 and code(other) == "idempotency_conflict"


async def test_last_used_at_is_written_at_most_once_a_minute(api: Api, engine: CampaignEngine,
                                                           clock: ManualClock) -> None:
    start = clock.now()
    assert (await api.get("/v1/account")).status_code == 200
    before = await event_count(engine)

    async def last_used() -> str | None:
        return (await api.get("/v1/api_keys")).json()[0]["last_used_at"]  # type: ignore[no-any-return]

    assert await last_used() == start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    clock.advance(timedelta(seconds=45))
    await api.get("/v1/account")
    assert await last_used() == start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")  # within the minute: not rewritten
    clock.advance(timedelta(seconds=30))
    assert await last_used() == clock.now().strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert await event_count(engine) == before  # using a key appends nothing

    # a rebuild of the read models keeps it (it is not a read model)
    await engine.rebuild_projections()
    assert (await engine.list_api_keys(api.ws_id))[0]["last_used_at"] == clock.now().strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z")


async def test_rebuild_gives_the_same_key_models(api: Api, engine: CampaignEngine) -> None:
    created = (await api.post("/v1/api_keys", json={"name": "second"})).json()
    await api.delete(f"/v1/api_keys/{created['id']}")
    before = await snapshot(engine)
    await engine.rebuild_projections()
    assert await snapshot(engine) == before
    assert [k["name"] for k in await engine.list_api_keys(api.ws_id)] == ["initial"]


async def test_workspace_names_are_unique(engine: CampaignEngine) -> None:
    ws = await engine.create_workspace("Acme")
    for twin in ("Acme", "acme", "  ACME "):
        with pytest.raises(Conflict) as caught:
            await engine.create_workspace(twin)
        assert caught.value.code == "workspace_exists" and caught.value.details["id"] == ws.id
    assert [w["name"] for w in await engine.list_workspaces()] == ["Acme"]
    assert (await engine.create_workspace(" Acme two ")).name == "Acme two"
    assert await engine.find_workspace("acme") == ws.id and await engine.find_workspace(ws.id) == ws.id


def test_version_1_key_events_read_with_a_name() -> None:
    old = {"workspace_id": "ws_1", "key_id": "key_1", "key_hash": "0" * 64, "prefix": "ce_abcd"}
    event = from_data("api_key.created", 1, old)
    assert event.name == "initial" and event.prefix == "ce_abcd"  # type: ignore[attr-defined]


async def test_a_database_made_before_key_names_is_rebuilt_in_shape(sqlite_url: str, clock: ManualClock) -> None:
    """An older database has rm_api_keys without ``name`` and the workspaces projection at version 1:
    opening it recreates the table in its new shape and the keys keep working."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        ws = await engine.create_workspace("acme")
        async with engine.store.write_engine.begin() as conn:
            await conn.execute(text("DROP TABLE rm_api_keys"))
            await conn.execute(text("CREATE TABLE rm_api_keys (key_id VARCHAR(64) PRIMARY KEY, workspace_id "
                                    "VARCHAR(64) NOT NULL, key_hash VARCHAR(64) NOT NULL UNIQUE, prefix VARCHAR(32) "
                                    "NOT NULL, revoked BOOLEAN NOT NULL, created_at VARCHAR(32) NOT NULL)"))
            await conn.execute(text("UPDATE projection_state SET version = 1 WHERE name = 'workspaces'"))
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        assert await engine.authenticate(ws.api_key) == ws.id
        assert [k["name"] for k in await engine.list_api_keys(ws.id)] == ["initial"]


async def test_key_lifecycle_on_each_backend(db_url: str, clock: ManualClock) -> None:
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as engine:
        ws = await engine.create_workspace("acme")
        owner = await engine.authenticate_key(ws.api_key)
        assert owner is not None and owner.workspace_id == ws.id
        clock.advance(timedelta(minutes=2))
        await engine.authenticate_key(ws.api_key)
        assert (await engine.list_api_keys(ws.id))[0]["last_used_at"] == clock.now().strftime(
            "%Y-%m-%dT%H:%M:%S.000000Z")

        # revocations racing each other never leave the workspace without a key
        for name in ("two", "three"):
            await engine.create_api_key(ws.id, {"name": name})
        ids = [k["id"] for k in await engine.list_api_keys(ws.id)]
        results = await asyncio.gather(*(engine.revoke_api_key(ws.id, key_id) for key_id in ids),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1 and isinstance(refused[0], Conflict) and refused[0].code == "last_api_key"
        assert len(await engine.list_api_keys(ws.id)) == 1
        assert await engine.authenticate(ws.api_key) is None
