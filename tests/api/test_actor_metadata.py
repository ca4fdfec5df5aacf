"""Every event says who acted: the API key and request of an API call, the runtime, the CLI.

Given a workspace key; when a contact is created through the API with a request id of the
caller's, and a campaign is sent by the engine's tick; then the contact's event carries
``actor: api_key:<id>``, that request id and the route, the claim and the send carry
``actor: system:runtime``, a call without a request id gets one in ``X-Request-Id`` that its
events carry too, and ``GET /v1/events`` shows the metadata.
"""

from __future__ import annotations

from engine import CampaignEngine, ManualClock
from tests.conftest import Api
from tests.delivery.smtp_server import SmtpSink


async def test_api_and_runtime_events_name_their_actor(api: Api, engine: CampaignEngine, clock: ManualClock) -> None:
    keys = (await api.get("/v1/api_keys")).json()
    key_id = keys[0]["id"] if isinstance(keys, list) else keys["data"][0]["id"]
    created = await api.post("/v1/contacts", json={"email": "ann@corp.io"}, headers={"X-Request-Id": "req-42"})
    assert created.status_code == 201 and created.headers["x-request-id"] == "req-42"
    events = (await api.get("/v1/events", params={"type": "contact.created"})).json()["data"]
    assert events[-1]["metadata"]["actor"] == f"api_key:{key_id}"
    assert events[-1]["metadata"]["request_id"] == "req-42"
    assert events[-1]["metadata"]["route"] == "POST /v1/contacts"
    with SmtpSink() as sink:
        sender = await api.post("/v1/senders", json={"email": "rep@sales.io", "smtp": {
            "host": sink.host, "port": sink.port, "security": "none"}})
        generated = sender.headers["x-request-id"]
        added = (await api.get("/v1/events", params={"type": "sender.added"})).json()["data"]
        assert added[-1]["metadata"]["request_id"] == generated and len(generated) >= 16
        cmp = (await api.post("/v1/campaigns", json={
            "name": "c", "sender_ids": [sender.json()["id"]], "steps": [{"subject": "s", "body_html": "b"}],
            "schedule": {"start_time": "00:00", "end_time": "24:00"}})).json()
        await api.post(f"/v1/campaigns/{cmp['id']}/enrollments", json={"contact_ids": [created.json()["id"]]})
        await api.post(f"/v1/campaigns/{cmp['id']}/launch")
        report = await engine.tick()
        assert report.sent == 1
    sent = (await api.get("/v1/events", params={"type": "email.sent"})).json()["data"]
    claimed = (await api.get("/v1/events", params={"type": "email.claimed"})).json()["data"]
    assert sent[-1]["metadata"]["actor"] == claimed[-1]["metadata"]["actor"] == "system:runtime"
    assert "request_id" not in sent[-1]["metadata"]
    direct = await engine.create_contact(api.ws_id, {"email": "bob@corp.io"})
    embedded = (await api.get("/v1/events", params={"type": "contact.created"})).json()["data"]
    assert embedded[-1]["data"]["contact_id"] == direct["id"] and embedded[-1]["metadata"]["actor"] == "embedded"
    del clock


def test_cli_appends_as_cli_and_export_shows_it(tmp_path: object) -> None:
    import json

    from typer.testing import CliRunner

    from engine.cli import app

    runner = CliRunner()
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    assert runner.invoke(app, ["workspace", "create", "ops", "--db", db]).exit_code == 0
    exported = runner.invoke(app, ["events", "export", "--db", db])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.output.splitlines() if line.startswith("{")]
    created = [line for line in lines if line["type"] == "workspace.created"]
    assert created and created[0]["metadata"]["actor"] == "cli"
