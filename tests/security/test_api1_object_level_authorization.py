"""OWASP API1:2023 Broken Object Level Authorization: another workspace's object is never reachable.

Given workspace A holding one object of every kind and workspace B with its own valid key; when B
calls every route that has an id in its path (found from the app's routing table, so a route added
later is attacked too), with every method the route serves, aimed at A's object; then each answer is
404 exactly as for an id that exists nowhere (never 200, never 403 or 409, which would reveal that
the object exists), carries none of A's data, and A's read models and the log are unchanged.
The same holds for A's ids smuggled into B's own requests through query strings and bodies.
Both backends: the isolation lives in each query's SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET, Api, snapshot
from tests.security.conftest import DOCS_PATHS, SENDER, Victim, created, last_position, served_operations

TOKEN_ROUTES = ("/t/", "/u/")
"""Tracking and unsubscribe: no API key, the signed token is the credential (API10's module)."""
UNKNOWN = {"campaign_id": "cmp_019b000000000000000000000000", "sender_id": "snd_019b000000000000000000000000",
           "contact_id": "con_019b000000000000000000000000", "list_id": "lst_019b000000000000000000000000",
           "webhook_id": "whk_019b000000000000000000000000", "key_id": "key_019b000000000000000000000000",
           "value": "nobody.at.all@nowhere-corp.io"}
"""Ids of the same shape as the victim's that exist in no workspace: the answer B must not tell apart."""


@pytest.fixture
async def engine(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """Overrides the shared SQLite engine: these tests run on SQLite and PostgreSQL."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as running:
        yield running


def as_unknown(text: str, victim: Victim) -> str:
    """``text`` with every victim id replaced by the unknown id of the same kind."""
    for name, value in victim.ids.items():
        text = text.replace(value, UNKNOWN[name])
    return text


def as_victim(text: str, victim: Victim) -> str:
    """The reverse of :func:`as_unknown`."""
    for name, value in victim.ids.items():
        text = text.replace(UNKNOWN[name], value)
    return text


def body_for(method: str, path: str, victim: Victim, own_contact: str) -> Any:
    """A body the route would accept from A, so that only the ownership check can refuse B.

    Where a route takes contact ids, B offers its own contact (adding it to A's list or campaign
    would be the break-in) or A's (removing A's would be). A route added later without an entry
    here is sent no body; if it then answers 400/422 instead of 404, add its body here.
    """
    bodies: dict[tuple[str, str], Any] = {
        ("PATCH", "/v1/senders/{sender_id}"): {"daily_limit": 5, "from_name": "Mallory"},
        ("POST", "/v1/senders/{sender_id}/dkim"): {"algorithm": "ed25519-sha256"},
        ("PATCH", "/v1/contacts/{contact_id}"): {"first_name": "Mallory"},
        ("POST", "/v1/lists/{list_id}/contacts"): {"contact_ids": [own_contact]},
        ("DELETE", "/v1/lists/{list_id}/contacts"): {"contact_ids": [victim.ids["contact_id"]]},
        ("PATCH", "/v1/campaigns/{campaign_id}"): {"name": "pwned"},
        ("PUT", "/v1/campaigns/{campaign_id}/schedule"): {"timezone": "UTC"},
        ("POST", "/v1/campaigns/{campaign_id}/enrollments"): {"contact_ids": [own_contact]},
        ("DELETE", "/v1/campaigns/{campaign_id}/enrollments"): {"contact_ids": [victim.ids["contact_id"]]},
        ("POST", "/v1/campaigns/{campaign_id}/dispatch"): {},
        ("POST", "/v1/campaigns/{campaign_id}/test_send"): {"emails": ["mallory@attacker-corp.io"]},
    }
    return bodies.get((method, path))


def id_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, template) with a path parameter that a workspace key reaches."""
    found = [(method, path) for method, path in served_operations(app)
             if "{" in path and method not in ("HEAD", "*")
             and not path.startswith(TOKEN_ROUTES) and not path.startswith(DOCS_PATHS)]
    assert len(found) >= 30, found  # the walk found the routers' routes, not just the app's own
    return sorted(set(found))


def assert_no_victim_data(answer: httpx.Response, victim: Victim, where: str) -> None:
    for marker in (*victim.markers, *[v for k, v in victim.ids.items() if k != "value"]):
        # the id B itself sent may be echoed back in a not-found message; nothing else of A's
        if marker in answer.text and marker not in where:
            raise AssertionError(f"{where}: the answer carries the victim's {marker!r}: {answer.text}")


async def test_every_id_route_answers_404_to_another_workspace(engine: CampaignEngine, victim: Victim,
                                                               attacker: Api) -> None:
    app = attacker.client._transport.app  # type: ignore[attr-defined]
    own_contact = (await created(attacker, "/v1/contacts", {"email": "mallory@attacker-corp.io"}))["id"]
    await attacker.get("/v1/account")  # B's key's last_used_at is noted now, not during the attack
    tables_before, position_before = await snapshot(engine), await last_position(engine)
    failures = []
    for method, template in id_routes(app):
        params = re.findall(r"{(\w+)}", template)
        missing = [p for p in params if p not in victim.ids]
        assert not missing, f"{method} {template}: give the victim an object for {missing} in tests/security"
        body = body_for(method, template, victim, own_contact)
        aimed = template.format_map({p: victim.ids[p] for p in params})
        unknown = template.format_map({p: UNKNOWN[p] for p in params})
        answer = await attacker.request(method, aimed, json=body)
        reference = await attacker.request(method, unknown, json=body)
        assert_no_victim_data(answer, victim, aimed)
        code = answer.json().get("error", {}).get("code") if answer.content else None
        expected = reference.json().get("error", {}).get("code") if reference.content else None
        if answer.status_code != 404 or (answer.status_code, code) != (reference.status_code, expected):
            failures.append(f"{method} {template}: {answer.status_code} {code} (unknown id: "
                            f"{reference.status_code} {expected})")
    assert not failures, "\n".join(failures)
    assert await last_position(engine) == position_before, "an attacker's request appended to the log"
    assert await snapshot(engine) == tables_before, "an attacker's request changed a read model"


async def victim_view(victim: Victim) -> dict[str, Any]:
    """Everything A can read about its own objects, through A's key: what an attack must not change."""
    ids = victim.ids
    paths = ["/v1/account", "/v1/senders", "/v1/contacts", "/v1/lists", "/v1/suppressions", "/v1/webhooks",
             "/v1/campaigns", "/v1/api_keys", "/v1/events?limit=1000", f"/v1/contacts/{ids['contact_id']}",
             f"/v1/contacts?list_id={ids['list_id']}", f"/v1/campaigns/{ids['campaign_id']}",
             f"/v1/campaigns/{ids['campaign_id']}/enrollments", f"/v1/senders/{ids['sender_id']}"]
    view = {}
    for path in paths:
        answer = await victim.api.get(path)
        assert answer.status_code == 200, (path, answer.text)
        view[path] = answer.json()
    return view


async def test_victim_ids_in_query_strings_and_bodies_are_unknown_to_another_workspace(
        engine: CampaignEngine, victim: Victim, attacker: Api) -> None:
    """B's own routes, given A's ids as arguments: refused like unknown ids; nothing of A's read or changed."""
    ids = victim.ids
    own_sender = await created(attacker, "/v1/senders", {**SENDER, "email": "m@attacker-corp.io"})
    mine = (await created(attacker, "/v1/campaigns", {"name": "mine", "sender_ids": [own_sender["id"]],
                                                      "steps": [{"subject": "s", "body_html": "b"}]}))["id"]
    own_list = (await created(attacker, "/v1/lists", {"name": "mine"}))["id"]
    attempts: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/contacts?list_id={ids['list_id']}", None),
        ("POST", f"/v1/contacts/import?list_id={ids['list_id']}", [{"email": "planted@attacker-corp.io"}]),
        ("GET", f"/v1/campaigns/{mine}/preview?contact_id={ids['contact_id']}", None),
        ("POST", f"/v1/campaigns/{mine}/enrollments", {"contact_ids": [ids["contact_id"]]}),
        ("POST", f"/v1/campaigns/{mine}/enrollments", {"list_ids": [ids["list_id"]]}),
        ("POST", f"/v1/campaigns/{mine}/test_send", {"emails": ["m@attacker-corp.io"],
                                                      "contact_id": ids["contact_id"]}),
        ("PATCH", f"/v1/campaigns/{mine}", {"sender_ids": [ids["sender_id"]]}),
        ("POST", "/v1/campaigns", {"name": "borrowed sender", "sender_ids": [ids["sender_id"]]}),
        ("POST", "/v1/campaigns/bulk_delete", {"ids": [ids["campaign_id"]]}),
        ("POST", f"/v1/lists/{own_list}/contacts", {"contact_ids": [ids["contact_id"]]}),
        ("DELETE", f"/v1/campaigns/{mine}/enrollments", {"contact_ids": [ids["contact_id"]]}),
    ]
    before = await victim_view(victim)
    for method, path, body in attempts:
        answer = await attacker.request(method, path, json=body)
        assert_no_victim_data(answer, victim, path + str(body))
        reference = await attacker.request(method, as_unknown(path, victim),
                                           json=json.loads(as_unknown(json.dumps(body), victim)))
        # the same answer as for ids that exist nowhere, once those ids are put back in its text
        assert answer.status_code == reference.status_code, (method, path, answer.text, reference.text)
        assert answer.json() == json.loads(as_victim(reference.text, victim)), (method, path, answer.text)
    events = (await attacker.get(f"/v1/events?stream=campaign-{ids['campaign_id']}&limit=1000")).json()
    assert events["data"] == []
    assert await victim_view(victim) == before
