"""Two tenants on one engine: a victim workspace holding one object of every kind, and an attacker.

The OWASP API Top 10 tests (one module per item) attack the victim through the public REST app with
the attacker's own, valid key, or with no key at all. ``Victim.ids`` maps each path parameter name
the API uses (``campaign_id``, ``sender_id``, ...) to the id of the victim's object of that kind, so
a test that walks the app's routes can aim every one of them at the victim.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from engine import CampaignEngine
from events import schema
from tests.conftest import Api

VICTIM_EMAIL = "victim.person@victim-corp.io"
VICTIM_NAME = "Vanessa-Victim"
VICTIM_SUPPRESSED = "blocked.person@victim-corp.io"
VICTIM_WEBHOOK = "https://hooks.victim-corp.io/endpoint"
VICTIM_CAMPAIGN = "Victim secret launch"
SENDER = {"email": "rep@victim-corp.io", "from_name": "Victim Sales",
          "smtp": {"host": "127.0.0.1", "port": 9, "username": "rep", "password": "victim-smtp-pw", "security": "none"}}
STEP = {"subject": "Hello {{first_name|there}}", "body_html": "<p>Hi</p>"}
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
"""Served but not API operations: the documentation pages, their assets and the document itself."""


@dataclass
class Victim:
    """Workspace A, seen through its own key, with the ids of its objects by path parameter name."""

    api: Api
    ids: dict[str, str]

    @property
    def markers(self) -> tuple[str, ...]:
        """Strings only the victim's data holds: none may appear in an answer to someone else."""
        return (VICTIM_EMAIL, VICTIM_NAME, VICTIM_SUPPRESSED, VICTIM_WEBHOOK, VICTIM_CAMPAIGN, SENDER["email"])


async def created(api: Api, path: str, body: Any) -> dict[str, Any]:
    """POST a body that must be accepted; the answer's JSON."""
    answer = await api.post(path, json=body)
    assert answer.status_code in (200, 201), (path, answer.text)
    return dict(answer.json())


@pytest.fixture
async def victim(api: Api) -> Victim:
    """One object of every kind in workspace A (``api``), the campaign a draft with a sender and a step."""
    sender = await created(api, "/v1/senders", SENDER)
    contact = await created(api, "/v1/contacts", {"email": VICTIM_EMAIL, "first_name": VICTIM_NAME,
                                                  "company": "Victim Corp", "custom_fields": {"plan": "gold"}})
    contact_list = await created(api, "/v1/lists", {"name": "victim list"})
    await created(api, f"/v1/lists/{contact_list['id']}/contacts", {"contact_ids": [contact["id"]]})
    await created(api, "/v1/suppressions", {"email": VICTIM_SUPPRESSED})
    webhook = await created(api, "/v1/webhooks", {"url": VICTIM_WEBHOOK, "events": ["email.sent"]})
    campaign = await created(api, "/v1/campaigns", {"name": VICTIM_CAMPAIGN, "sender_ids": [sender["id"]],
                                                    "steps": [STEP]})
    await created(api, f"/v1/campaigns/{campaign['id']}/enrollments", {"contact_ids": [contact["id"]]})
    second_key = await created(api, "/v1/api_keys", {"name": "victim's second key"})
    ids = {"campaign_id": campaign["id"], "sender_id": sender["id"], "contact_id": contact["id"],
           "list_id": contact_list["id"], "webhook_id": webhook["id"], "key_id": second_key["id"],
           "value": VICTIM_SUPPRESSED}
    return Victim(api, ids)


@pytest.fixture
async def attacker(other_api: Api) -> Api:
    """Workspace B's valid key: authenticated, but owning none of the victim's objects."""
    return other_api


async def last_position(engine: CampaignEngine) -> int:
    """The log's last position: unchanged means nothing was appended."""
    async with engine.store.reading() as conn:
        return int((await conn.execute(select(func.max(schema.events.c.position)))).scalar() or 0)


def served_operations(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(METHOD, path template) of every route the app really serves, found from its routing table.

    Independent of the OpenAPI document on purpose: FastAPI keeps included routers as nested
    entries (``effective_candidates``), walked here to the routes that answer requests. Mounts
    (the docs' static assets) yield ``("*", prefix + "/{path}")``.
    """
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop(0)
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            pending.extend(candidates())
            continue
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if path is None:
            continue
        if methods is None:  # a Mount: everything below its prefix
            yield "*", f"{path}/{{path}}"
            continue
        for method in sorted(methods):
            yield method, path


_unique = itertools.count()


def fresh(kind: str) -> str:
    """An address no other body of the session used."""
    return f"{kind}{next(_unique)}@security-test.io"


def valid_bodies(victim: Victim, spare_contact: str) -> dict[tuple[str, str], Callable[[], Any]]:
    """A body each JSON operation accepts, keyed by (method, OpenAPI path), made fresh per call so that
    creations never collide. A new operation needs an entry here: the tests that walk the document say so."""
    contact = spare_contact
    return {
        ("post", "/v1/senders"): lambda: {**SENDER, "email": fresh("s")},
        ("patch", "/v1/senders/{sender_id}"): lambda: {"daily_limit": 60},
        ("post", "/v1/senders/{sender_id}/dkim"): lambda: {"algorithm": "ed25519-sha256"},
        ("post", "/v1/contacts"): lambda: {"email": fresh("c")},
        ("patch", "/v1/contacts/{contact_id}"): lambda: {"first_name": "Renamed"},
        ("post", "/v1/lists"): lambda: {"name": "another list"},
        ("post", "/v1/lists/{list_id}/contacts"): lambda: {"contact_ids": [contact]},
        ("delete", "/v1/lists/{list_id}/contacts"): lambda: {"contact_ids": [contact]},
        ("post", "/v1/suppressions"): lambda: {"email": fresh("x")},
        ("post", "/v1/webhooks"): lambda: {"url": "https://hooks.example.com/x", "events": ["email.sent"]},
        ("post", "/v1/campaigns"): lambda: {"name": "created"},
        ("post", "/v1/campaigns/bulk_delete"): lambda: {"ids": ["cmp_019b000000000000000000000000"]},
        ("patch", "/v1/campaigns/{campaign_id}"): lambda: {"name": "renamed"},
        ("put", "/v1/campaigns/{campaign_id}/schedule"): lambda: {"timezone": "Europe/Paris"},
        ("post", "/v1/campaigns/{campaign_id}/enrollments"): lambda: {"contact_ids": [contact]},
        ("delete", "/v1/campaigns/{campaign_id}/enrollments"): lambda: {"contact_ids": [contact]},
        ("post", "/v1/campaigns/{campaign_id}/dispatch"): lambda: {},
        ("post", "/v1/campaigns/{campaign_id}/test_send"): lambda: {"emails": ["qa@security-test.io"]},
        ("post", "/v1/api_keys"): lambda: {"name": "another key"},
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a ``$ref`` of the OpenAPI document points at."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema
