"""DKIM end to end: keys set through the REST API, emails sent by tick and test_send to the real SMTP
sink, signatures verified by dkimpy against the records of ``GET .../dns`` served by the loopback DNS
server; and the private key never leaves: not in answers, the event log, an export or the logs."""

from __future__ import annotations

import asyncio
import base64
import email
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import dkim as dkimpy
import dns.resolver
import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from engine import CampaignEngine, ManualClock, create_app
from engine.delivery.outbound import dkim
from engine.service import audit
from events import schema
from projections import tables as t
from tests.conftest import SECRET
from tests.delivery.dns_server import DnsServer
from tests.delivery.smtp_server import SmtpSink

DOMAIN = "sales.io"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer({}) as server:
        yield server


def dns_lookup(server: DnsServer) -> Callable[..., bytes]:
    """dkimpy's ``dnsfunc``: TXT records through dnspython from the loopback server only."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        return b"".join(b"".join(record.strings) for record in answer)

    return lookup


def publish(server: DnsServer, record: dict[str, Any]) -> None:
    """A record of ``GET .../dns`` as a DNS provider stores it: split into 255-byte strings."""
    value = record["value"]
    strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    server.set_records(record["name"], {record["type"]: [strings]})


class Client:
    """The REST API of one workspace, remembering every answer so the test can search them all."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http, self.headers = http, {"Authorization": f"Bearer {key}"}
        self.answers: list[str] = []

    async def call(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = await self.http.request(method, path, headers=self.headers, **kw)
        self.answers.append(response.text)
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
async def rest(eng: CampaignEngine) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url="http://t") as http:
        ws = await eng.create_workspace("acme", monthly_limit=1000)
        yield Client(http, ws.api_key)


async def launch(client: Client, sink: SmtpSink, sender_id: str) -> str:
    contact = await client.call("POST", "/v1/contacts", 201, json={"email": "ana@corp.io", "first_name": "Ana"})
    campaign = await client.call("POST", "/v1/campaigns", 201, json={
        "name": "Signed", "sender_ids": [sender_id],
        "steps": [{"subject": "Hello {{first_name}}", "body_html": "<p>Hi {{first_name}}</p>", "delay": {"days": 0}}],
        "schedule": {"timezone": "UTC", "start_time": "00:00", "end_time": "23:59"}})
    await client.call("POST", f"/v1/campaigns/{campaign['id']}/enrollments", json={"contact_ids": [contact["id"]]})
    await client.call("POST", f"/v1/campaigns/{campaign['id']}/launch")
    return str(campaign["id"])


async def send_all(engine: CampaignEngine, clock: ManualClock) -> None:
    for _ in range(10):
        report = await engine.tick()
        if report.next_due_at is None:
            return
        clock.set(max(report.next_due_at, clock.now() + timedelta(seconds=1)))


def signed_headers(raw: bytes) -> list[str]:
    signature = " ".join(email.message_from_bytes(raw)["DKIM-Signature"].split())
    tags = dict(part.strip().split("=", 1) for part in signature.split(";") if "=" in part)
    return [name.strip() for name in tags["h"].split(":")]


def key_fragments(pem: str) -> list[str]:
    """Pieces of the private key that would show if it leaked in any form the engine handles.

    Taken from the end of the key (RSA: the CRT coefficient; Ed25519: the seed), never from its
    start, where an RSA key carries its modulus, which is public.
    """
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    der = base64.b64decode(body)
    converted = dkim._dkimpy_key(pem).decode()  # the form handed to dkimpy
    converted_body = "".join(line for line in converted.splitlines() if not line.startswith("-----"))
    return [body[-64:-4], der[-32:].hex(), base64.b64encode(der[-32:]).decode()[:24], converted_body[-64:-4]]


async def stored_private_key(engine: CampaignEngine, sender_id: str) -> str:
    async with engine.store.reading() as conn:
        row = (await conn.execute(select(t.senders.c.dkim).where(t.senders.c.id == sender_id))).scalar()
    return engine.vault.decrypt_secret(json.loads(row)["private_key_enc"])


async def test_generated_rsa_key_signs_every_email_and_never_leaves(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, dns_server: DnsServer, rest: Client) -> None:
    with capture_logs() as logs:
        sender = await rest.call("POST", "/v1/senders", 201, json={
            "email": f"rep@{DOMAIN}", "from_name": "Rep", "daily_limit": 50,
            "smtp": {"host": sink.host, "port": sink.port, "security": "none", "password": "smtp-pw"}})
        assert sender["dkim"] is None
        unsigned = await rest.call("GET", f"/v1/senders/{sender['id']}/dns")
        assert unsigned["dkim"] is None and any("no DKIM key" in w for w in unsigned["warnings"])

        sender = await rest.call("POST", f"/v1/senders/{sender['id']}/dkim")  # an empty body: generate RSA
        assert sender["dkim"]["algorithm"] == "rsa-sha256" and sender["dkim"]["selector"] == "ce20260105"
        assert set(sender["dkim"]) == {"selector", "algorithm", "public_key"}
        assert (await rest.call("GET", f"/v1/senders/{sender['id']}"))["dkim"] == sender["dkim"]
        records = await rest.call("GET", f"/v1/senders/{sender['id']}/dns")
        assert records["dkim"] == {"name": f"ce20260105._domainkey.{DOMAIN}", "type": "TXT",
                                   "value": f"v=DKIM1; k=rsa; p={sender['dkim']['public_key']}"}
        assert records["spf"]["name"] == DOMAIN and records["spf"]["value"] == "v=spf1 a mx ~all"  # loopback relay
        assert records["dmarc"] == {"name": f"_dmarc.{DOMAIN}", "type": "TXT",
                                    "value": f"v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}",
                                    "note": records["dmarc"]["note"]}
        assert records["warnings"] == []  # https public_url, a key
        publish(dns_server, records["dkim"])

        campaign_id = await launch(rest, sink, sender["id"])
        await send_all(eng, clock)
        await rest.call("POST", f"/v1/campaigns/{campaign_id}/test_send", json={"emails": ["qa@corp.io"]})
        await rest.call("GET", "/v1/events?limit=1000")
        exported = [json.dumps(audit.export_record(event), default=str)
                    async for event in audit.export_events(eng.store)]

    messages = sink.messages
    assert len(messages) == 2  # the campaign's email and the test send
    for message in messages:
        assert dkimpy.verify(message.data, dnsfunc=dns_lookup(dns_server)), message.data[:600]
        assert signed_headers(message.data) == ["from", "to", "subject", "date", "message-id", "list-unsubscribe",
                                                "list-unsubscribe-post"]
    assert dns_server.count(records["dkim"]["name"], "TXT") >= 2

    pem = await stored_private_key(eng, sender["id"])
    async with eng.store.reading() as conn:
        log_rows = [str(row) for row in await conn.execute(select(schema.events.c.data))]
    assert any("sender.dkim_key_set" in text for text in exported)
    places = {"answers": "\n".join(rest.answers), "export": "\n".join(exported), "logs": repr(logs),
              "event rows": "\n".join(log_rows), "emails": "\n".join(m.data.decode() for m in messages)}
    for fragment in key_fragments(pem):
        for place, text in places.items():
            assert fragment not in text, f"the private key shows in {place}"
    assert any(entry["event"] == "sender_dkim_key_set" for entry in logs)


async def test_imported_ed25519_key_and_an_http_public_url(
        sqlite_url: str, clock: ManualClock, sink: SmtpSink, dns_server: DnsServer) -> None:
    with capture_logs() as logs:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET,
                                  public_url="http://track.example.com") as engine:
            stop = asyncio.Event()
            loop_task = asyncio.create_task(engine.run(stop))  # serve and worker warn as their loop starts
            await asyncio.sleep(0.05)
            stop.set()
            await loop_task
            assert any(entry["event"] == "public_url_not_https" and entry["log_level"] == "warning"
                       for entry in logs)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine)),
                                         base_url="http://t") as http:
                ws = await engine.create_workspace("acme", monthly_limit=1000)
                client = Client(http, ws.api_key)
                sender = await client.call("POST", "/v1/senders", 201, json={
                    "email": f"rep@{DOMAIN}", "daily_limit": 50,
                    "smtp": {"host": sink.host, "port": sink.port, "security": "none"}})
                path = f"/v1/senders/{sender['id']}/dkim"
                for body, field in (({"algorithm": "dsa"}, "algorithm"), ({"selector": "a b"}, "selector"),
                                    ({"private_key_pem": "junk"}, "private_key_pem"), ({"extra": 1}, "extra"),
                                    ({"private_key_pem": dkim.generate_private_key("ed25519-sha256"),
                                      "algorithm": "rsa-sha256"}, "private_key_pem")):
                    answer = await client.call("POST", path, 422, json=body)
                    assert answer["error"]["code"] == "validation_failed"
                    assert answer["error"]["details"]["errors"][0]["field"] == field
                await client.call("POST", "/v1/senders/snd_missing/dkim", 404, json={})
                await client.call("GET", "/v1/senders/snd_missing/dns", 404)

                pem = dkim.generate_private_key("ed25519-sha256")
                sender = await client.call("POST", path, json={"selector": "Edge1", "private_key_pem": pem})
                assert sender["dkim"] == {"selector": "edge1", "algorithm": "ed25519-sha256",
                                          "public_key": dkim.public_key_value(pem)}
                records = await client.call("GET", f"/v1/senders/{sender['id']}/dns")
                assert records["dkim"]["value"].startswith("v=DKIM1; k=ed25519; p=")
                assert any("public_url" in warning and "not https" in warning for warning in records["warnings"])
                publish(dns_server, records["dkim"])
                await launch(client, sink, sender["id"])
                await send_all(engine, clock)
                assert all(pem not in answer for answer in client.answers)
    [message] = sink.messages
    parsed = email.message_from_bytes(message.data)
    assert parsed["List-Unsubscribe-Post"] is None  # never offered over http
    assert "<http://track.example.com/u/" in parsed["List-Unsubscribe"] and "mailto:" in parsed["List-Unsubscribe"]
    assert signed_headers(message.data) == ["from", "to", "subject", "date", "message-id", "list-unsubscribe"]
    assert dkimpy.verify(message.data, dnsfunc=dns_lookup(dns_server))
    assert not any(fragment in repr(logs) for fragment in key_fragments(pem))
