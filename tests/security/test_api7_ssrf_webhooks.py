"""OWASP API7:2023 Server Side Request Forgery: webhooks never call where the engine must not reach.

Given a webhook URL chosen by a workspace; when it names an address the engine must never call
(unspecified, link-local such as the cloud metadata service 169.254.169.254, multicast, broadcast,
reserved), in any spelling (IPv4-mapped or NAT64 IPv6, one decimal number, octal dots); then the
webhook is refused at creation with 422 naming ``url``, and nothing is appended. Private and
loopback addresses are refused the same way when the documented option
``webhook_allow_private_addresses`` is off (``serve --no-private-webhooks``), accepted when it is on.
A host name is judged at every delivery by what it resolves to (``localhost`` through the system
resolver here: the engine resolves with ``getaddrinfo``, which the test DNS server cannot answer
for), and a receiver's redirect is never followed, so no hop can lead around the check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.conftest import SECRET, Api
from tests.security.conftest import last_position

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/", "http://2852039166/", "http://0251.0376.0251.0376/", "http://0xa9.0xfe.0xa9.0xfe/",
    "http://[fe80::1]/", "http://0.0.0.0:8080/", "http://[::]/", "http://224.0.0.1/", "http://255.255.255.255/",
    "http://240.0.0.1/", "https://169.254.169.254:443/",
]
PRIVATE = [
    "http://127.0.0.1:8080/admin", "http://127.1/", "http://2130706433/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.5/", "http://172.16.0.1/", "http://192.168.1.1/", "http://100.100.100.200/latest/meta-data",
    "http://[fd00:ec2::254]/latest/meta-data", "http://[::ffff:10.0.0.1]/",
]


@asynccontextmanager
async def workspace_client(engine: CampaignEngine) -> AsyncIterator[Api]:
    workspace = await engine.create_workspace("hooks")
    app = create_app(engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, workspace.id, workspace.api_key)


async def create_status(api: Api, url: str) -> tuple[int, Any]:
    answer = await api.post("/v1/webhooks", json={"url": url, "events": ["contact.created"]})
    return answer.status_code, answer.json()


async def test_addresses_never_allowed_are_refused_at_creation(engine: CampaignEngine) -> None:
    """The default (private addresses allowed) still refuses these: metadata and kin."""
    async with workspace_client(engine) as api:
        before = await last_position(engine)
        for url in ALWAYS_REFUSED:
            status, body = await create_status(api, url)
            assert status == 422, (url, body)
            assert [e["field"] for e in body["error"]["details"]["errors"]] == ["url"], (url, body)
        assert await last_position(engine) == before
        assert (await api.get("/v1/webhooks")).json()["data"] == []
        for url in PRIVATE:  # the documented default: a LAN or loopback receiver is allowed
            assert (await create_status(api, url))[0] == 201, url


@pytest.fixture
async def strict_engine(sqlite_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """A multi-tenant deployment: private addresses off, few attempts so that a refusal ends soon."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, webhook_allow_private_addresses=False,
                              webhook_max_attempts=2) as running:
        yield running


async def test_private_addresses_are_refused_when_the_option_is_off(strict_engine: CampaignEngine) -> None:
    async with workspace_client(strict_engine) as api:
        before = await last_position(strict_engine)
        for url in [*PRIVATE, *ALWAYS_REFUSED]:
            status, body = await create_status(api, url)
            assert status == 422 and body["error"]["details"]["errors"][0]["field"] == "url", (url, body)
        assert await last_position(strict_engine) == before
        assert (await create_status(api, "https://hooks.example.com/ok"))[0] == 201


class Listener:
    """A real HTTP endpoint on loopback that records requests and answers ``status`` with ``headers``."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status, self.headers = status, headers or {}
        self.requests: list[str] = []

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                           if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            self.requests.append(head.split("\r\n", 1)[0])
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            writer.write(f"HTTP/1.1 {self.status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_name_resolving_to_loopback_is_refused_at_delivery(strict_engine: CampaignEngine) -> None:
    """Host names pass creation (no DNS then; it could change anyway) and are judged at every delivery."""
    async with Listener() as receiver, workspace_client(strict_engine) as api:
        status, hook = await create_status(api, f"http://localhost:{receiver.port}/hook")
        assert status == 201
        assert (await api.post("/v1/contacts", json={"email": "a@ssrf-test.io"})).status_code == 201
        report = await strict_engine.deliver_webhooks()
        assert (report.delivered, report.failed) == (0, 1)
        [delivery] = (await strict_engine.webhook_deliveries(api.ws_id, hook["id"]))["deliveries"]
        assert "destination refused: localhost resolves to" in delivery["last_error"]
        assert "loopback" in delivery["last_error"]
        assert receiver.requests == []


async def test_redirects_are_never_followed(engine: CampaignEngine) -> None:
    """A receiver answering 3xx towards the metadata address or another local service: the engine
    records a failed attempt (``HTTP 302``) and calls nothing else."""
    async with Listener() as inner, workspace_client(engine) as api:
        targets = [f"http://127.0.0.1:{inner.port}/internal-admin", "http://169.254.169.254/latest/meta-data/"]
        for target in targets:
            async with Listener(302, {"Location": target}) as outer:
                status, hook = await create_status(api, f"http://127.0.0.1:{outer.port}/hook")
                assert status == 201
                contact = await api.post("/v1/contacts", json={"email": f"r{outer.port}@ssrf-test.io"})
                assert contact.status_code == 201
                report = await engine.deliver_webhooks()
                assert report.delivered == 0 and report.failed >= 1
                assert len(outer.requests) >= 1 and outer.requests[0].startswith("POST /hook")
                deliveries = (await engine.webhook_deliveries(api.ws_id, hook["id"]))["deliveries"]
                assert deliveries and all(d["last_status"] == 302 for d in deliveries), deliveries
                assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 200
        assert inner.requests == []
