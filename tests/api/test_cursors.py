"""Keyset cursors over REST: every long listing walked by cursors gives what walking by pages gives.

Given contacts (many imported in one request, so sharing one ``created_at``), lists, suppressions,
webhooks, senders, campaigns, an active campaign's enrollments and their events, when a client walks
each listing with ``?cursor=`` from one ``pagination.next_cursor`` to the next, then it gets the
same items in the same order as walking ``?page=1,2,...``, ends on a null ``next_cursor``, and may
switch from pages to cursors at any page. Filters hold along a cursor walk; a cursor that is
malformed, altered, or made for other filters, another listing or another workspace is 422
``validation_failed`` naming ``cursor``. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.api.test_management_api import SENDER
from tests.conftest import SECRET, Api

STEP = {"subject": "Hi {{first_name|there}}", "body_html": "<p>Hello</p>"}


@pytest.fixture
async def eng(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as e:
        yield e


@pytest.fixture
async def client(eng: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url="http://test") as c:
        yield c


async def workspace(eng: CampaignEngine, client: httpx.AsyncClient, name: str) -> Api:
    ws = await eng.create_workspace(name, monthly_limit=10_000)
    return Api(client, ws.id, ws.api_key)


@dataclass
class World:
    api: Api
    rival: Api
    contacts: list[str]  # every contact id, in creation order
    list_id: str  # holds every third contact
    campaign_id: str  # active, with 13 of the contacts enrolled


@pytest.fixture
async def world(eng: CampaignEngine, client: httpx.AsyncClient, clock: ManualClock) -> World:
    """17 contacts imported in one request (one created_at), then 6 more one by one, a minute apart."""
    api, rival = await workspace(eng, client, "acme"), await workspace(eng, client, "rival")
    rows = [{"email": f"bulk{i:02d}@example.com", "company": "Initech" if i % 2 else "Globex"} for i in range(17)]
    r = await api.post("/v1/contacts/import", json=rows)
    assert r.status_code == 200 and r.json()["created"] == 17, r.text
    for i in range(6):
        clock.advance(timedelta(minutes=1))
        r = await api.post("/v1/contacts", json={"email": f"late{i}@example.com", "company": "Initech"})
        assert r.status_code == 201, r.text
    contacts = [c["id"] for c in await walk_pages(api, "/v1/contacts", {"per_page": 200})]
    assert len(contacts) == 23
    list_id = (await api.post("/v1/lists", json={"name": "thirds"})).json()["id"]
    r = await api.post(f"/v1/lists/{list_id}/contacts", json={"contact_ids": contacts[::3]})
    assert r.status_code == 200, r.text
    sender_id = (await api.post("/v1/senders", json=SENDER)).json()["id"]
    campaign_id = (await api.post("/v1/campaigns", json={"name": "Walk", "sender_ids": [sender_id],
                                                           "steps": [STEP]})).json()["id"]
    assert (await api.post(f"/v1/campaigns/{campaign_id}/launch")).json()["status"] == "active"
    for batch in (contacts[:7], contacts[7:13]):  # two requests: two batch numbers in the listing
        r = await api.post(f"/v1/campaigns/{campaign_id}/enrollments", json={"contact_ids": batch})
        assert r.json()["added"] == len(batch), r.text
    return World(api, rival, contacts, list_id, campaign_id)


async def walk_pages(api: Api, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a page-based listing, page 1, 2, ... until has_more is false."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        r = await api.get(path, params={**params, "page": page})
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["data"]
        if not body["pagination"]["has_more"]:
            assert body["pagination"]["next_cursor"] is None
            return items
        page += 1


async def walk_cursors(api: Api, path: str, params: dict[str, Any], first: str | None = None, before: int = 0
                       ) -> list[dict[str, Any]]:
    """Every item from ``first`` (or the first page) on, following next_cursor until it is null.

    ``before`` is the number of items before ``first``'s page. Each page must say which page it is
    (counted in items before it), and that more follows exactly when it hands a next_cursor.
    """
    items: list[dict[str, Any]] = []
    cursor = first
    pages = 0
    while True:
        r = await api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["data"]
        pagination = body["pagination"]
        if "page" in pagination:
            assert pagination["per_page"] == params["per_page"]
            assert pagination["page"] == (before + len(items) - len(body["data"])) // params["per_page"] + 1
        assert pagination["has_more"] == (pagination["next_cursor"] is not None)
        pages += 1
        assert pages < 100, "a cursor walk that does not end"
        if pagination["next_cursor"] is None:
            return items
        cursor = pagination["next_cursor"]


def ids(items: list[dict[str, Any]], key: str = "id") -> list[Any]:
    return [item[key] for item in items]


def refused_cursor(r: httpx.Response) -> bool:
    body = r.json()
    return (r.status_code == 422 and body["error"]["code"] == "validation_failed"
            and [e["field"] for e in body["error"]["details"]["errors"]] == ["cursor"])


async def test_contacts_by_cursor_equal_contacts_by_page(world: World) -> None:
    api = world.api
    by_page = await walk_pages(api, "/v1/contacts", {"per_page": 4})
    by_cursor = await walk_cursors(api, "/v1/contacts", {"per_page": 4})
    assert ids(by_cursor) == ids(by_page) == world.contacts
    # The 17 imported contacts tie on created_at: the order between them is their id's.
    assert world.contacts[:17] == sorted(world.contacts[:17])
    first = (await api.get("/v1/contacts", params={"per_page": 4})).json()["pagination"]
    assert first == {"page": 1, "per_page": 4, "total": 23, "has_more": True, "next_cursor": first["next_cursor"]}
    # A page reached by cursor reports the page it is and the same total.
    third = (await api.get("/v1/contacts", params={"per_page": 4, "cursor": (await api.get(
        "/v1/contacts", params={"per_page": 4, "page": 2})).json()["pagination"]["next_cursor"]})).json()
    assert third["pagination"]["page"] == 3 and third["pagination"]["total"] == 23
    assert ids(third["data"]) == world.contacts[8:12]


async def test_switching_from_pages_to_cursors_at_any_page(world: World) -> None:
    api = world.api
    for page in (1, 3, 5):
        r = (await api.get("/v1/contacts", params={"per_page": 4, "page": page})).json()
        rest = await walk_cursors(api, "/v1/contacts", {"per_page": 4}, first=r["pagination"]["next_cursor"],
                                  before=page * 4)
        assert ids(r["data"]) + ids(rest) == world.contacts[(page - 1) * 4:]
    last = (await api.get("/v1/contacts", params={"per_page": 4, "page": 6})).json()
    assert ids(last["data"]) == world.contacts[20:] and last["pagination"]["next_cursor"] is None
    # per_page may change along a cursor walk: the keyset does not depend on it.
    r = (await api.get("/v1/contacts", params={"per_page": 5})).json()
    rest = await walk_cursors(api, "/v1/contacts", {"per_page": 7}, first=r["pagination"]["next_cursor"], before=5)
    assert ids(r["data"]) + ids(rest) == world.contacts


@pytest.mark.parametrize("filters", [{"q": "late"}, {"list_id": "LIST"}, {"status": "active"},
                                     {"q": "bulk", "list_id": "LIST"}])
async def test_contact_filters_hold_along_a_cursor_walk(world: World, filters: dict[str, str]) -> None:
    params = {k: (world.list_id if v == "LIST" else v) for k, v in filters.items()} | {"per_page": 2}
    by_page = await walk_pages(world.api, "/v1/contacts", params)
    by_cursor = await walk_cursors(world.api, "/v1/contacts", params)
    assert ids(by_cursor) == ids(by_page) and by_page
    assert len(by_page) < 23 or filters == {"status": "active"}


async def test_enrollments_by_cursor_equal_enrollments_by_page(world: World) -> None:
    path = f"/v1/campaigns/{world.campaign_id}/enrollments"
    for params in ({"per_page": 3}, {"per_page": 2, "batch_number": 2}, {"per_page": 4, "status": "in_progress"}):
        by_page = await walk_pages(world.api, path, params)
        by_cursor = await walk_cursors(world.api, path, params)
        assert ids(by_cursor) == ids(by_page)
    everyone = await walk_cursors(world.api, path, {"per_page": 5})
    assert ids(everyone, "contact_id") == world.contacts[:13]


async def test_campaigns_by_cursor_in_every_sort_and_order(world: World, clock: ManualClock) -> None:
    api = world.api
    names = ["delta", "alpha", "echo", "alpha", "charlie", "bravo"]
    for i, name in enumerate(names):  # pairs share a created_at: ties are ordered by id, ascending
        if i % 2 == 0:
            clock.advance(timedelta(seconds=30))
        assert (await api.post("/v1/campaigns", json={"name": name, "folder": "f" if i % 3 else None})
                ).status_code == 201
    for sort in ("created_at", "updated_at", "name", "status"):
        for order in ("asc", "desc"):
            params = {"per_page": 2, "sort": sort, "order": order}
            by_page = await walk_pages(api, "/v1/campaigns", params)
            assert len(by_page) == 7
            assert ids(await walk_cursors(api, "/v1/campaigns", params)) == ids(by_page), (sort, order)
    params = {"per_page": 1, "folder": "f", "sort": "name", "order": "asc"}
    by_folder = await walk_cursors(api, "/v1/campaigns", params)
    assert ids(by_folder) == ids(await walk_pages(api, "/v1/campaigns", params)) and len(by_folder) == 4
    assert all("stats" in item for item in by_folder)


async def test_lists_suppressions_webhooks_and_senders_take_cursors(world: World, clock: ManualClock) -> None:
    api = world.api
    for i in range(4):
        clock.advance(timedelta(seconds=1))
        await api.post("/v1/lists", json={"name": f"list {i}"})
        await api.post("/v1/suppressions", json={"email": f"gone{i}@example.com"})
        await api.post("/v1/suppressions", json={"domain": f"gone{i}.example"})
        await api.post("/v1/senders", json={**SENDER, "email": f"s{i}@acme.io"})
        r = await api.post("/v1/webhooks", json={"url": f"https://hooks.example.com/{i}", "events": ["email.sent"]})
        assert r.status_code == 201, r.text
    for path, key, count in (("/v1/lists", "id", 5), ("/v1/suppressions", "value", 8), ("/v1/webhooks", "id", 4),
                             ("/v1/senders", "id", 5)):
        by_page = await walk_pages(api, path, {"per_page": 3})
        assert len(by_page) == count
        assert ids(await walk_cursors(api, path, {"per_page": 3}), key) == ids(by_page, key), path


async def test_events_cursor_is_the_after_keyset(world: World) -> None:
    api = world.api

    async def walk_after(params: dict[str, Any]) -> list[int]:
        positions: list[int] = []
        after = 0
        while True:
            body = (await api.get("/v1/events", params={**params, "after": after})).json()
            positions += ids(body["data"], "position")
            if not body["data"]:
                return positions
            after = body["next_after"]

    for params in ({"limit": 4}, {"limit": 3, "type": "enrollment.created"},
                   {"limit": 2, "stream": f"campaign-{world.campaign_id}"}):
        by_cursor = await walk_cursors(api, "/v1/events", params)
        assert ids(by_cursor, "position") == await walk_after(params) and by_cursor
    first = (await api.get("/v1/events", params={"limit": 4})).json()
    assert first["next_after"] == first["data"][-1]["position"]
    # The events listing answers its cursor beside next_after, never the page-based fields.
    assert set(first["pagination"]) == {"next_cursor", "has_more"} and first["pagination"]["has_more"]
    r = await api.get("/v1/events", params={"limit": 4, "after": 2, "cursor": first["pagination"]["next_cursor"]})
    assert refused_cursor(r)


async def test_activity_cursor_is_the_after_keyset(world: World) -> None:
    api = world.api
    path = f"/v1/campaigns/{world.campaign_id}/activity"
    for params in ({"limit": 5}, {"limit": 4, "type": "email.scheduled"},
                   {"limit": 1, "contact_id": world.contacts[3]}):
        by_cursor = await walk_cursors(api, path, params)
        by_after: list[int] = []
        after = 0
        while True:
            body = (await api.get(path, params={**params, "after": after})).json()
            by_after += ids(body["data"])
            assert body["pagination"] == {"next_cursor": body["pagination"]["next_cursor"],
                                          "has_more": body["has_more"]}
            if not body["has_more"]:
                break
            after = body["next_after"]
        assert ids(by_cursor) == by_after and by_cursor
    assert len(await walk_cursors(api, path, {"limit": 5})) == 26  # 13 enrollments and their first emails


async def test_bad_cursors_are_refused_naming_cursor(world: World, eng: CampaignEngine) -> None:
    api = world.api
    good = (await api.get("/v1/contacts", params={"per_page": 2})).json()["pagination"]["next_cursor"]
    payload, mac = good.split(".")
    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**raw, "k": ["0000", "con_0"]}).encode()).rstrip(b"=").decode()
    flipped = good[:5] + ("A" if good[5] != "A" else "B") + good[6:]
    for bad in ("nonsense", "a.b", good[:-3], good + "x", f"{forged}.{mac}", flipped, good.replace(".", ""),
                "é" * 10, "x" * 5000):
        assert refused_cursor(await api.get("/v1/contacts", params={"per_page": 2, "cursor": bad})), bad
    # Another filter, another listing, another page size is fine; page and cursor together are not.
    assert refused_cursor(await api.get("/v1/contacts", params={"per_page": 2, "q": "bulk", "cursor": good}))
    assert refused_cursor(await api.get("/v1/lists", params={"cursor": good}))
    assert refused_cursor(await api.get("/v1/events", params={"cursor": good}))
    assert refused_cursor(await api.get("/v1/contacts", params={"page": 2, "cursor": good}))
    assert (await api.get("/v1/contacts", params={"per_page": 3, "cursor": good})).status_code == 200
    assert (await api.get("/v1/contacts", params={"cursor": ""})).json()["pagination"]["page"] == 1
    # A campaign's cursor does not open another campaign's listing, nor other sort orders.
    path = f"/v1/campaigns/{world.campaign_id}"
    enrollment_cursor = (await api.get(f"{path}/enrollments", params={"per_page": 2})).json()["pagination"][
        "next_cursor"]
    other = (await api.post("/v1/campaigns", json={"name": "other"})).json()["id"]
    assert refused_cursor(await api.get(f"/v1/campaigns/{other}/enrollments", params={"cursor": enrollment_cursor}))
    assert refused_cursor(await api.get(f"{path}/enrollments", params={"status": "pending",
                                                                       "cursor": enrollment_cursor}))
    activity_cursor = (await api.get(f"{path}/activity", params={"limit": 2})).json()["pagination"]["next_cursor"]
    assert refused_cursor(await api.get(f"{path}/activity", params={"type": "email.scheduled",
                                                                    "cursor": activity_cursor}))
    campaigns_cursor = (await api.get("/v1/campaigns", params={"per_page": 1})).json()["pagination"]["next_cursor"]
    assert refused_cursor(await api.get("/v1/campaigns", params={"order": "asc", "cursor": campaigns_cursor}))
    # The Python API refuses the same way.
    with pytest.raises(Exception) as refused:
        await eng.list_contacts(api.ws_id, cursor=flipped)
    assert getattr(refused.value, "code", None) == "validation_failed"
    walked = await eng.list_contacts(api.ws_id, per_page=2, cursor=good)
    assert ids(walked["data"]) == world.contacts[2:4]


async def test_a_cursor_never_crosses_workspaces(world: World) -> None:
    api, rival = world.api, world.rival
    await rival.post("/v1/contacts/import", json=[{"email": f"r{i}@rival.example"} for i in range(5)])
    theirs = (await rival.get("/v1/contacts", params={"per_page": 2})).json()["pagination"]["next_cursor"]
    ours = (await api.get("/v1/contacts", params={"per_page": 2})).json()["pagination"]["next_cursor"]
    assert refused_cursor(await api.get("/v1/contacts", params={"per_page": 2, "cursor": theirs}))
    assert refused_cursor(await rival.get("/v1/contacts", params={"per_page": 2, "cursor": ours}))
    events = (await api.get("/v1/events", params={"limit": 2})).json()["pagination"]["next_cursor"]
    assert refused_cursor(await rival.get("/v1/events", params={"cursor": events}))
    # The rival's own walk shows only its own contacts.
    assert len(await walk_cursors(rival, "/v1/contacts", {"per_page": 2})) == 5


async def test_openapi_documents_cursor_on_every_long_listing(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/contacts", "/v1/campaigns", "/v1/campaigns/{campaign_id}/enrollments",
                 "/v1/campaigns/{campaign_id}/activity", "/v1/events", "/v1/lists", "/v1/suppressions",
                 "/v1/webhooks", "/v1/senders"):
        params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
        assert params["cursor"]["schema"]["type"] == "string", path
    assert "next_cursor" in spec["components"]["schemas"]["Pagination"]["properties"]
