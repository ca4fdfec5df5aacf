"""Secrets never leave: after a whole scenario, no log line, API answer, event or export holds them.

Given a workspace with an API key, a sender with SMTP and IMAP passwords and a DKIM key, and the
engine's secret key; when a campaign is created, sent, reported on, exported and listed through
the API and the CLI's export; then none of those secrets (nor the DKIM key's private parts)
appears in the captured logs, the API answers, the raw event rows or the export.
"""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select
from structlog.testing import capture_logs

from engine import CampaignEngine, ManualClock, create_app
from engine.service.audit import export_events
from events import schema
from events.registry import to_data
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_dkim_scenario import key_fragments, stored_private_key

SMTP_PASSWORD = "smtp-pass-7f3a9c1e55"
IMAP_PASSWORD = "imap-pass-0b8d2e4c71"


async def test_no_secret_in_logs_answers_events_or_exports(sqlite_url: str, clock: ManualClock) -> None:
    answers: list[str] = []
    with SmtpSink(users={"rep": SMTP_PASSWORD}) as sink, capture_logs() as logs:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET,
                                  public_url="https://track.example.com") as eng:
            ws = await eng.create_workspace("acme")
            headers = {"Authorization": f"Bearer {ws.api_key}"}
            app = create_app(eng)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                async def call(method: str, path: str, body: object = None) -> dict[str, object]:
                    answer = await http.request(method, path, headers=headers, json=body)
                    answers.append(answer.text + json.dumps(dict(answer.headers)))
                    return answer.json()  # type: ignore[no-any-return]

                sender = await call("POST", "/v1/senders", {
                    "email": "rep@sales.io", "daily_limit": 50,
                    "smtp": {"host": sink.host, "port": sink.port, "username": "rep", "password": SMTP_PASSWORD,
                             "security": "none"},
                    "imap": {"host": "127.0.0.1", "port": 9, "username": "rep", "password": IMAP_PASSWORD,
                             "security": "none"}})
                await call("POST", f"/v1/senders/{sender['id']}/dkim", {"algorithm": "ed25519-sha256"})
                contact = await call("POST", "/v1/contacts", {"email": "ann@corp.io", "first_name": "Ann"})
                campaign = await call("POST", "/v1/campaigns", {
                    "name": "c", "sender_ids": [sender["id"]], "steps": [{"subject": "Hi", "body_html": "<p>x</p>"}],
                    "schedule": {"start_time": "00:00", "end_time": "24:00"}})
                await call("POST", f"/v1/campaigns/{campaign['id']}/enrollments", {"contact_ids": [contact["id"]]})
                await call("POST", f"/v1/campaigns/{campaign['id']}/launch")
                assert (await eng.tick()).sent == 1
                for path in ("/v1/senders", f"/v1/senders/{sender['id']}", f"/v1/senders/{sender['id']}/dns",
                             f"/v1/campaigns/{campaign['id']}/stats", f"/v1/campaigns/{campaign['id']}/activity",
                             "/v1/events?limit=1000", "/v1/api_keys", "/v1/account"):
                    await call("GET", path)
                await call("POST", f"/v1/senders/{sender['id']}/check")
            private_key = await stored_private_key(eng, sender["id"])
            exported = [json.dumps({"data": to_data(event.event), "metadata": event.metadata}, default=str)
                        async for event in export_events(eng.store)]
            async with eng.store.reading() as conn:
                rows = [str(tuple(row)) for row in await conn.execute(select(schema.events))]
    secrets = {"API key": ws.api_key, "secret key": SECRET, "SMTP password": SMTP_PASSWORD,
               "IMAP password": IMAP_PASSWORD, **{f"DKIM key part {n}": part
                                                  for n, part in enumerate(key_fragments(private_key))}}
    places = {"logs": repr(logs), "API answers": "\n".join(answers), "event rows": "\n".join(rows),
              "export": "\n".join(exported)}
    for name, secret in secrets.items():
        for place, text in places.items():
            assert secret not in text, f"the {name} shows in the {place}"
    assert len(sink.messages) == 1  # the scenario did run: the email went with the password
