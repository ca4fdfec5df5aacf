"""Shared fixtures: engines on a ManualClock, an API client, and throwaway PostgreSQL databases."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app

PG_DSN = os.environ.get("CAMPAIGN_ENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "test-secret-key-0123456789abcdef"
PUBLIC = "https://track.example.com"  # the public URL tracking links and unsubscribe pages use


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))  # a Monday


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"ce_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def throwaway_database(backend: str) -> AsyncIterator[str]:
    """A throwaway database of ``backend``: a SQLite file in a temporary folder, or a fresh
    PostgreSQL database; for tests that run one body on both backends outside a fixture."""
    if backend == "postgres":
        async with pg_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite+aiosqlite:///{folder}/p.db"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/engine.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/engine.db"
    else:
        async with pg_database() as url:
            yield url


@pytest.fixture
def sink() -> Iterator[Any]:
    """A recording aiosmtpd server on a loopback port (tests/delivery/smtp_server.py)."""
    from tests.delivery.smtp_server import SmtpSink

    with SmtpSink() as running:
        yield running


@pytest.fixture
async def eng(sqlite_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """An engine whose tracking links and pages are on :data:`PUBLIC`."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, public_url=PUBLIC) as running:
        yield running


@pytest.fixture
async def web(eng: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The recipients' side of the app (pixel, clicks, unsubscribe pages): no API key."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url=PUBLIC) as client:
        yield client


@pytest.fixture
async def engine(sqlite_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as e:
        yield e


class Api:
    """An httpx client bound to one workspace's key."""

    def __init__(self, client: httpx.AsyncClient, ws_id: str, key: str) -> None:
        self.client, self.ws_id, self.key = client, ws_id, key
        self.headers = {"Authorization": f"Bearer {key}"}

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)


@pytest.fixture
async def http(engine: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine, max_body_bytes=64 * 1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
async def api(engine: CampaignEngine, http: httpx.AsyncClient) -> Api:
    ws = await engine.create_workspace("acme", monthly_limit=10_000)
    return Api(http, ws.id, ws.api_key)


@pytest.fixture
async def other_api(engine: CampaignEngine, http: httpx.AsyncClient) -> Api:
    ws = await engine.create_workspace("rival")
    return Api(http, ws.id, ws.api_key)


async def snapshot(engine: CampaignEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table, ordered by primary key: to compare inline read models with a rebuild."""
    from sqlalchemy import select

    out = {}
    async with engine.store.reading() as conn:
        for p in engine.projector.projections:
            for table in p.tables:
                rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                out[table.name] = [tuple(r) for r in rows]
    return out
