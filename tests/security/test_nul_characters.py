"""A NUL character (U+0000) in any request input is refused alike on both backends.

PostgreSQL's text cannot hold U+0000: a filter, an id or a body field carrying one answered 500
(``invalid byte sequence for encoding "UTF8": 0x00``), while SQLite stored it. Given a workspace
with a campaign; when a query parameter, a path parameter or a JSON body (keys and string values,
at any depth) carries a NUL; then 422 ``validation_failed`` naming the field, on SQLite and
PostgreSQL, and nothing is appended to the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET, Api
from tests.security.conftest import created, last_position


@pytest.fixture
async def engine(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """Overrides the shared SQLite engine: these tests run on SQLite and PostgreSQL."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as running:
        yield running


async def test_a_nul_character_anywhere_in_a_request_is_refused_naming_the_field(engine: CampaignEngine,
                                                                                  api: Api) -> None:
    campaign = (await created(api, "/v1/campaigns", {"name": "plain"}))["id"]
    contact = (await created(api, "/v1/contacts", {"email": "plain@nul-corp.io"}))["id"]
    before = await last_position(engine)
    cases: list[tuple[str, str, Any, str]] = [
        ("GET", "/v1/events?type=%00", None, "type"),
        ("GET", "/v1/contacts?q=%00", None, "q"),
        ("GET", "/v1/campaigns?q=a%00b", None, "q"),
        ("GET", "/v1/contacts/con_%00", None, "contact_id"),
        ("GET", f"/v1/campaigns/{campaign}/activity?contact_id=%00", None, "contact_id"),
        ("POST", "/v1/campaigns", {"name": "a\u0000b"}, "name"),
        ("POST", "/v1/contacts", {"email": "a@x.io", "first_name": "a\u0000"}, "first_name"),
        ("POST", "/v1/contacts", {"email": "b@x.io", "custom_fields": {"plan\u0000": "gold"}},
         "custom_fields.plan\\u0000"),
        ("POST", "/v1/contacts", {"email": "c@x.io", "custom_fields": {"plan": "g\u0000ld"}}, "custom_fields.plan"),
        ("POST", "/v1/lists", {"name": "l\u0000"}, "name"),
        ("POST", "/v1/api_keys", {"name": "k\u0000"}, "name"),
        ("POST", "/v1/campaigns", {"name": "steps", "steps": [{"subject": "s", "body_html": "<p>\u0000</p>"}]},
         "steps.0.body_html"),
        ("PATCH", f"/v1/contacts/{contact}", {"last_name": "\u0000"}, "last_name"),
    ]
    for method, path, body, field in cases:
        answer = await api.request(method, path, json=body)
        assert answer.status_code == 422, (method, path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "validation_failed", (path, error)
        assert [detail["field"] for detail in error["details"]["errors"]] == [field], (path, error)
    assert await last_position(engine) == before
    # the same requests without the NUL are served
    assert (await api.get("/v1/campaigns?q=ab")).status_code == 200
    assert (await api.post("/v1/lists", json={"name": "l"})).status_code == 201
