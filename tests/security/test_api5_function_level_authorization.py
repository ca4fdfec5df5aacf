"""OWASP API5:2023 Broken Function Level Authorization: no key reaches beyond its own workspace.

The administrative functions are workspace creation, listing workspaces and key management for
other workspaces; they exist only on the command line, which holds the database itself. Given that;
then no REST route names a workspace (in its path or its parameters) and none creates or lists
workspaces; a key manages only its own workspace's keys (what it creates authenticates there only);
the raw log (``GET /v1/events``, the audit trail over REST) shows only the caller's workspace
whatever the filters; the keyless operations endpoints show no workspace's data; and methods the
API does not serve on a path are 405, appending nothing.
"""

from __future__ import annotations

from fastapi import FastAPI

from engine import CampaignEngine
from tests.conftest import Api
from tests.security.conftest import Victim, last_position, served_operations


async def test_no_route_creates_lists_or_names_workspaces(victim: Victim, attacker: Api) -> None:
    app: FastAPI = attacker.client._transport.app  # type: ignore[attr-defined]
    operations = list(served_operations(app))
    assert not [path for _, path in operations if "workspace" in path.lower()]
    document = (await attacker.client.get("/openapi.json")).json()
    parameters = [parameter["name"] for operations_of_path in document["paths"].values()
                  for operation in operations_of_path.values() for parameter in operation.get("parameters", [])]
    assert parameters and not [name for name in parameters if "workspace" in name.lower()]
    before = await last_position(app.state.engine)
    for method, path in (("POST", "/v1/workspaces"), ("GET", "/v1/workspaces"),
                         ("GET", f"/v1/workspaces/{victim.api.ws_id}"), ("GET", f"/v1/account/{victim.api.ws_id}"),
                         ("GET", "/v1/admin"), ("POST", "/v1/admin/api_keys")):
        answer = await attacker.request(method, path, json={"name": "evil"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", (path, answer.text)
    assert (await attacker.get("/v1/account")).json()["id"] == attacker.ws_id
    assert await last_position(app.state.engine) == before


async def test_key_management_stays_in_the_callers_workspace(engine: CampaignEngine, victim: Victim,
                                                             attacker: Api) -> None:
    victim_keys = (await victim.api.get("/v1/api_keys")).json()
    refused = await attacker.post("/v1/api_keys", json={"name": "x", "workspace_id": victim.api.ws_id})
    assert refused.status_code == 422
    created = await attacker.post("/v1/api_keys", json={"name": "attacker's second"})
    assert created.status_code == 201
    new_key = Api(attacker.client, attacker.ws_id, created.json()["key"])
    assert (await new_key.get("/v1/account")).json()["id"] == attacker.ws_id
    listed = (await attacker.get("/v1/api_keys")).json()
    assert {entry["id"] for entry in listed}.isdisjoint({entry["id"] for entry in victim_keys})
    for entry in victim_keys:
        assert (await new_key.delete(f"/v1/api_keys/{entry['id']}")).status_code == 404
    assert (await victim.api.get("/v1/api_keys")).json() == victim_keys
    attacker_actors = {f"api_key:{entry['id']}" for entry in listed}
    victim_stream = await engine.store.read_stream(f"workspace-{victim.api.ws_id}")
    assert not [event.type for event in victim_stream if event.metadata.get("actor") in attacker_actors]


async def test_the_raw_log_shows_only_the_callers_workspace(victim: Victim, attacker: Api) -> None:
    ids = victim.ids
    seen = []
    for query in ("limit=1000", f"stream=campaign-{ids['campaign_id']}", f"stream=contact-{ids['contact_id']}",
                  f"stream=workspace-{victim.api.ws_id}", "type=contact.created", "type=api_key.created",
                  "after=0&limit=1000&type=campaign.created"):
        answer = await attacker.get(f"/v1/events?{query}")
        assert answer.status_code == 200, answer.text
        seen += answer.json()["data"]
    assert seen, "the attacker's own events should be listed"
    text = str(seen)
    for marker in (victim.api.ws_id, *ids.values(), *victim.markers):
        assert marker not in text, marker
    mine = (await victim.api.get("/v1/events?limit=1000")).json()["data"]
    assert {event["position"] for event in mine}.isdisjoint({event["position"] for event in seen})


async def test_keyless_operations_endpoints_show_no_workspace_data(victim: Victim, attacker: Api) -> None:
    client = attacker.client
    for path in ("/healthz", "/readyz", "/metrics"):
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        for marker in (victim.api.ws_id, attacker.ws_id, victim.api.key, *victim.ids.values(), *victim.markers):
            assert marker not in answer.text, (path, marker)


async def test_methods_not_served_are_405_and_do_nothing(engine: CampaignEngine, victim: Victim) -> None:
    api = victim.api
    before = await last_position(engine)
    for method, path in (("DELETE", "/v1/account"), ("PATCH", "/v1/account"), ("DELETE", "/v1/events"),
                         ("POST", "/v1/events"), ("PUT", f"/v1/contacts/{victim.ids['contact_id']}"),
                         ("PATCH", f"/v1/webhooks/{victim.ids['webhook_id']}"),
                         ("PATCH", f"/v1/api_keys/{victim.ids['key_id']}"), ("DELETE", "/v1/suppressions")):
        answer = await api.request(method, path, json={"name": "x"})
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "method_not_allowed" and answer.headers["allow"]
    assert await last_position(engine) == before
