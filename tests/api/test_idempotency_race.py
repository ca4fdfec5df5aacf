"""Idempotency-Key under concurrency: the key is claimed before the command runs.

Sequential replays are covered in test_management_api; these tests fire requests at once, which is
how a client retrying on a timeout (or a load balancer duplicating a request) really behaves. The
first request to claim the key runs the command; the others wait for its response and replay it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from engine import CampaignEngine, ManualClock, create_app
from engine.api import support
from engine.api.idempotency import IdempotencyRecords
from events import schema
from tests.conftest import SECRET

BURST = 8


@pytest.fixture
async def engine_on(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """An engine on each backend: the race is decided by the database's unique key, so both count."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as engine:
        yield engine


@pytest.fixture
async def client(engine_on: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine_on)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


async def _workspace(engine: CampaignEngine) -> tuple[str, dict[str, str]]:
    workspace = await engine.create_workspace("acme", monthly_limit=10_000)
    return workspace.id, {"Authorization": f"Bearer {workspace.api_key}"}


async def _count_contacts(engine: CampaignEngine, workspace_id: str) -> int:
    listed = await engine.list_contacts(workspace_id)
    return int(listed["pagination"]["total"])


async def _count_events(engine: CampaignEngine, event_type: str) -> int:
    async with engine.store.reading() as conn:
        events = schema.events
        total = (await conn.execute(select(func.count()).select_from(events)
                                    .where(events.c.type == event_type))).scalar_one()
    return int(total)


def _post(http: httpx.AsyncClient, headers: dict[str, str], key: str, body: dict[str, Any]
          ) -> Any:
    return http.post("/v1/contacts", json=body, headers={**headers, "Idempotency-Key": key})


async def test_identical_concurrent_posts_all_get_the_first_response(
        engine_on: CampaignEngine, client: httpx.AsyncClient) -> None:
    workspace_id, headers = await _workspace(engine_on)
    body = {"email": "ada@example.com", "first_name": "Ada"}
    answers = await asyncio.gather(*(_post(client, headers, "same-key", body) for _ in range(BURST)))
    assert [answer.status_code for answer in answers] == [201] * BURST, [answer.text for answer in answers]
    assert len({answer.text for answer in answers}) == 1  # byte-for-byte the first response
    assert sum(answer.headers.get("Idempotent-Replayed") == "true" for answer in answers) == BURST - 1
    assert await _count_contacts(engine_on, workspace_id) == 1
    assert await _count_events(engine_on, "contact.created") == 1
    again = await _post(client, headers, "same-key", body)  # and later, once settled
    assert again.status_code == 201 and again.text == answers[0].text


async def test_different_bodies_with_one_key_at_once_conflict(
        engine_on: CampaignEngine, client: httpx.AsyncClient) -> None:
    workspace_id, headers = await _workspace(engine_on)
    first, second = await asyncio.gather(_post(client, headers, "one-key", {"email": "ada@example.com"}),
                                         _post(client, headers, "one-key", {"email": "bob@example.com"}))
    assert sorted([first.status_code, second.status_code]) == [201, 409], (first.text, second.text)
    refused = first if first.status_code == 409 else second
    assert refused.json()["error"]["code"] == "idempotency_conflict"
    assert await _count_contacts(engine_on, workspace_id) == 1
    assert await _count_events(engine_on, "contact.created") == 1


async def test_a_refusal_is_replayed_to_concurrent_duplicates(
        engine_on: CampaignEngine, client: httpx.AsyncClient) -> None:
    """The README promises refused requests are replayed: waiters get the first 409, not a new run."""
    _, headers = await _workspace(engine_on)
    taken = await client.post("/v1/contacts", json={"email": "ada@example.com"}, headers=headers)
    assert taken.status_code == 201
    answers = await asyncio.gather(*(_post(client, headers, "dup-key", {"email": "ada@example.com"})
                                     for _ in range(4)))
    assert {answer.status_code for answer in answers} == {409}
    assert {answer.json()["error"]["code"] for answer in answers} == {"contact_exists"}
    assert len({answer.text for answer in answers}) == 1


async def test_a_crash_releases_the_claim(engine_on: CampaignEngine, client: httpx.AsyncClient,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that dies without a response leaves no claim behind: the client's retry runs."""
    workspace_id, headers = await _workspace(engine_on)
    original = engine_on.create_contact

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash inside the command")

    monkeypatch.setattr(engine_on, "create_contact", crash)
    app = create_app(engine_on)  # a 500 rather than the exception re-raised into the test
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as crashing:
        failed = await _post(crashing, headers, "retry-key", {"email": "ada@example.com"})
    assert failed.status_code == 500
    monkeypatch.setattr(engine_on, "create_contact", original)
    retried = await _post(client, headers, "retry-key", {"email": "ada@example.com"})
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert await _count_contacts(engine_on, workspace_id) == 1


async def _dead_claim(engine: CampaignEngine, workspace_id: str, key: str, body: dict[str, Any]) -> None:
    """A pending claim as a process killed mid-request leaves it: the hash is the one the API computes."""
    digest = hashlib.sha256(json.dumps(["POST", "/v1/contacts", body], sort_keys=True,
                                       default=str).encode()).hexdigest()
    assert await IdempotencyRecords(engine.store).claim(workspace_id, key, digest,
                                                        stale_after=support.IDEMPOTENCY_STALE_AFTER) is None


async def test_a_claim_left_by_a_dead_process_is_taken_over_once_stale(
        engine_on: CampaignEngine, client: httpx.AsyncClient, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While fresh, a duplicate waits (bounded) then gets 409; once stale, the key runs again."""
    workspace_id, headers = await _workspace(engine_on)
    body = {"email": "ada@example.com"}
    await _dead_claim(engine_on, workspace_id, "orphan-key", body)
    monkeypatch.setattr(support, "IDEMPOTENCY_WAIT_SECONDS", 0.05)
    waited = await _post(client, headers, "orphan-key", body)
    assert waited.status_code == 409 and waited.json()["error"]["code"] == "idempotency_conflict"
    assert await _count_contacts(engine_on, workspace_id) == 0
    clock.advance(support.IDEMPOTENCY_STALE_AFTER + timedelta(seconds=1))
    taken = await _post(client, headers, "orphan-key", body)
    assert taken.status_code == 201, taken.text
    assert await _count_contacts(engine_on, workspace_id) == 1


async def test_a_stored_response_is_found_only_under_its_own_workspace(engine: CampaignEngine) -> None:
    records = IdempotencyRecords(engine.store)
    assert await records.lookup("ws_one", "k1") is None
    await records.complete("ws_one", "k1", "h", 201, '{"ok": true}')
    assert await records.lookup("ws_one", "k1") == ("h", 201, '{"ok": true}')
    assert await records.lookup("ws_other", "k1") is None
    await records.complete("ws_one", "k1", "h2", 200, '{"second": true}')  # the first response stays
    assert await records.lookup("ws_one", "k1") == ("h", 201, '{"ok": true}')
