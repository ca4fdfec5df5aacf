"""OWASP API3:2023 Broken Object Property Level Authorization: read-only properties cannot be written.

Given every operation whose JSON body creates or changes something (found from the OpenAPI
document, so a new one is covered); when a body the operation accepts is sent with one extra
property that the client must not set (the answer's own read-only properties such as ``id``,
``status``, ``created_at``, ``stats``, ``sent_today``, ``has_password``, and ``workspace_id``,
``sent_count``), one at a time; then the request is refused with 422 ``validation_failed`` naming
that property and appends nothing, or, where the API ignores it, the stored object does not hold it.
CSV and JSON imports, whose unknown columns are custom fields by design, never set those properties.
"""

from __future__ import annotations

from typing import Any

from engine import CampaignEngine
from engine.delivery.content.tokens import unsubscribe_token
from tests.conftest import Api
from tests.security.conftest import SENDER, Victim, fresh, last_position, resolve, valid_bodies

ALWAYS_READ_ONLY = ("id", "workspace_id", "status", "created_at", "updated_at", "stats", "sent_count")
FORGED: dict[str, Any] = {"id": "cmp_forged000000000000000000000", "workspace_id": "ws_forged00000000000000000000",
                          "status": "active", "created_at": "2000-01-01T00:00:00.000000Z",
                          "updated_at": "2000-01-01T00:00:00.000000Z", "stats": {"emails": {"sent": 0}},
                          "sent_count": 0, "has_password": True, "sent_today": 0, "bounce_rate": 0.0,
                          "disabled_reason": None, "launched_at": "2000-01-01T00:00:00.000000Z",
                          "contact_count": 1_000_000, "prefix": "ce_forge", "last_used_at": None,
                          "key": "ce_forged", "secret": "forged", "dkim": {"selector": "s", "public_key": "x"}}
"""The value sent for each property: plausible for its type, so a lenient API would have taken it."""
def read_only_properties(document: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    """What the answer shows but the body does not take, plus the properties no client ever sets."""
    request = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    success = next(code for code in operation["responses"] if code.startswith("2"))
    content = operation["responses"][success].get("content", {}).get("application/json", {})
    answer = resolve(document, content.get("schema", {}))
    taken = set(request.get("properties", {}))
    shown = set(answer.get("properties", {}))
    return sorted((shown - taken) | (set(ALWAYS_READ_ONLY) - taken))


def json_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Operations with a JSON object body (the import's array body has its own test below)."""
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and resolve(document, body["schema"]).get("type") != "array":
                found.append((method, path, operation))
    assert len(found) >= 15
    return found


async def test_read_only_properties_are_refused_by_every_body(engine: CampaignEngine, victim: Victim) -> None:
    api = victim.api
    document = (await api.client.get("/openapi.json")).json()
    spare = (await api.post("/v1/contacts", json={"email": fresh("spare")})).json()["id"]
    makers = valid_bodies(victim, spare)
    failures = []
    for method, path, operation in json_operations(document):
        assert (method, path) in makers, f"{method.upper()} {path}: give it a valid body in tests/security (API3)"
        target = path.format_map(victim.ids)
        baseline = await api.request(method.upper(), target, json=makers[(method, path)]())
        assert baseline.status_code < 500 and baseline.status_code not in (400, 404), (path, baseline.text)
        for prop in read_only_properties(document, operation):
            before = await last_position(engine)
            answer = await api.request(method.upper(), target, json={**makers[(method, path)](), prop: FORGED.get(
                prop, "forged")})
            if answer.status_code == 422:
                fields = [e["field"] for e in answer.json()["error"]["details"].get("errors", [])]
                if prop not in fields:
                    failures.append(f"{method} {path} +{prop}: 422 without naming it: {answer.text[:200]}")
                if await last_position(engine) != before:
                    failures.append(f"{method} {path} +{prop}: refused but appended")
            elif answer.status_code < 300:
                shown = answer.json()
                if isinstance(shown, dict) and prop in shown and shown[prop] == FORGED.get(prop, "forged"):
                    failures.append(f"{method} {path} +{prop}: applied: {answer.text[:200]}")
            else:
                failures.append(f"{method} {path} +{prop}: {answer.status_code} {answer.text[:200]}")
    assert not failures, "\n".join(failures)


async def test_nested_read_only_properties_are_refused(engine: CampaignEngine, victim: Victim) -> None:
    api = victim.api
    before = await last_position(engine)
    smtp = {**SENDER["smtp"], "has_password": False}  # type: ignore[dict-item]
    for method, path, body in [
        ("POST", "/v1/senders", {**SENDER, "email": fresh("n"), "smtp": smtp}),
        ("PATCH", f"/v1/senders/{victim.ids['sender_id']}", {"smtp": smtp}),
        ("PATCH", f"/v1/senders/{victim.ids['sender_id']}", {"dkim": {"selector": "evil", "public_key": "x"}}),
        ("POST", "/v1/campaigns", {"name": "n", "steps": [{"subject": "s", "body_html": "b", "sent": 9}]}),
    ]:
        answer = await api.request(method, path, json=body)
        assert answer.status_code == 422, (path, body, answer.text)
        assert answer.json()["error"]["code"] == "validation_failed"
    assert await last_position(engine) == before
    sender = (await api.get(f"/v1/senders/{victim.ids['sender_id']}")).json()
    assert sender["smtp"]["has_password"] is True and sender["dkim"] is None


async def assert_plain_contact(api: Api, email: str) -> None:
    """The imported contact has an id, status and creation time of the engine's choosing."""
    found = (await api.get(f"/v1/contacts?q={email}")).json()["data"]
    assert len(found) == 1, found
    contact = found[0]
    assert contact["id"].startswith("con_") and "forged" not in contact["id"]
    assert contact["status"] != "forged" and contact["created_at"] != FORGED["created_at"]
    full = (await api.get(f"/v1/contacts/{contact['id']}")).json()
    assert full["status"] == contact["status"] and not full["id"].endswith("forged")
    # what the row said is kept as the custom fields it is, never as the properties themselves
    assert full["custom_fields"].get("status") == "forged"


async def test_imports_never_set_read_only_properties(engine: CampaignEngine, victim: Victim, attacker: Api) -> None:
    api = victim.api
    row = {"email": "json.row@mass-assign.io", "id": "con_forged", "workspace_id": attacker.ws_id,
           "status": "forged", "created_at": FORGED["created_at"]}
    answer = await api.post("/v1/contacts/import", json=[row])
    assert answer.status_code == 200 and answer.json()["created"] == 1, answer.text
    await assert_plain_contact(api, row["email"])
    csv = ("email,id,workspace_id,status,created_at\n"
           f"csv.row@mass-assign.io,con_forged2,{attacker.ws_id},forged,{FORGED['created_at']}\n")
    answer = await api.post("/v1/contacts/import", content=csv.encode(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.json()["created"] == 1, answer.text
    await assert_plain_contact(api, "csv.row@mass-assign.io")
    mapped = await api.post('/v1/contacts/import?mapping={"state":"status","ident":"id"}',
                            content=b"email,state,ident\nmapped@mass-assign.io,forged,con_forged3\n",
                            headers={"Content-Type": "text/csv"})
    assert mapped.status_code == 200 and mapped.json()["created"] == 1, mapped.text
    await assert_plain_contact(api, "mapped@mass-assign.io")
    # nothing reached the attacker's workspace named in the rows
    assert (await attacker.get("/v1/contacts")).json()["pagination"]["total"] == 0


async def test_an_import_cannot_resubscribe_an_unsubscribed_contact(engine: CampaignEngine, victim: Victim) -> None:
    """Given a contact who unsubscribed (one-click); when an import row for the same address says
    ``unsubscribed: false, status: active``; then the contact stays unsubscribed."""
    api = victim.api
    contact = victim.ids["contact_id"]
    token = unsubscribe_token(engine.vault.token_key, api.ws_id, contact, "enr_x.1")
    assert (await api.client.post(f"/u/{token}")).status_code == 200
    before = (await api.get(f"/v1/contacts/{contact}")).json()
    assert before["unsubscribed"] is True
    rows = [{"email": before["email"], "unsubscribed": False, "status": "active", "bounced": False}]
    assert (await api.post("/v1/contacts/import", json=rows)).status_code == 200
    csv = f"email,unsubscribed,status\n{before['email']},false,active\n".encode()
    assert (await api.post("/v1/contacts/import", content=csv, headers={"Content-Type": "text/csv"})).status_code == 200
    patched = await api.patch(f"/v1/contacts/{contact}", json={"unsubscribed": False})
    assert patched.status_code == 422
    after = (await api.get(f"/v1/contacts/{contact}")).json()
    assert after["unsubscribed"] is True and after["status"] == before["status"]
    suppressed = (await api.get("/v1/suppressions")).json()["data"]
    assert before["email"] in [entry["value"] for entry in suppressed]
