"""Webhook deliveries against a real HTTP receiver on loopback, on a ManualClock.

``Receiver`` is a minimal HTTP/1.1 server (``asyncio.start_server``) in the test's own event loop: it
records every request and answers whatever ``answer`` says, after ``delay`` seconds, or hangs until
released. No mocks: the engine's httpx client talks TCP to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from engine import CampaignEngine, ManualClock, create_app
from engine.errors import ValidationFailed
from projections.webhooks_outbox import webhook_checkpoints, webhook_deliveries
from tests.conftest import SECRET, Api
from tests.delivery.smtp_server import SmtpSink


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered (0: it hung)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real webhook endpoint on 127.0.0.1 that records requests and misbehaves on request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.answer: Callable[[dict[str, Any]], int] = lambda body: 200
        self.delay = 0.0
        self.hang = False
        self.hanging = 0
        self.release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Any]:
        """Bodies answered 2xx, in the order they arrived."""
        return [r.json for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        self.server.close()
        await self.server.wait_closed()
        for task in list(self._tasks):
            with suppress(Exception):
                await asyncio.wait_for(task, 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if self.hang:
                self.hanging += 1
                self.requests.append(Request(method, path, headers, body, 0))
                await self.release.wait()
                return
            await asyncio.sleep(self.delay)
            status = self.answer(json.loads(body))
            self.requests.append(Request(method, path, headers, body, status))
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@asynccontextmanager
async def engine_at(url: str, clock: ManualClock, **options: Any) -> AsyncIterator[CampaignEngine]:
    async with CampaignEngine(url, clock=clock, secret_key=SECRET, **options) as eng:
        yield eng


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_signed_delivery_of_subscribed_events_once(eng: CampaignEngine, receiver: Receiver) -> None:
    ws = (await eng.create_workspace("acme")).id
    other = (await eng.create_workspace("rival")).id
    everything = await eng.create_webhook(ws, {"url": receiver.url + "/all", "events": ["*"]})
    hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created", "contact.created"]})
    contact = await eng.create_contact(ws, {"email": "ada@corp.io", "first_name": "Ada"})
    cmp = await eng.create_campaign(ws, {"name": "A"})
    await eng.update_campaign(ws, cmp["id"], {"name": "A2"})
    await eng.create_campaign(other, {"name": "not ours"})

    report = await eng.deliver_webhooks()
    assert report.webhooks == 2 and report.delivered == 2 + 4 and report.failed == 0

    mine = [r for r in receiver.requests if r.path == "/hook"]
    assert [r.json["type"] for r in mine] == ["contact.created", "campaign.created"]
    for r in mine:
        expected = "sha256=" + hmac.new(hook["secret"].encode(), r.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(r.headers["x-signature"], expected)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-webhook-id"] == hook["id"] and r.headers["x-event-id"] == str(r.json["id"])
        assert set(r.json) == {"id", "type", "stream", "version", "recorded_at", "data"}
    assert mine[0].json["data"]["email"] == "ada@corp.io"  # personal data, decrypted
    assert mine[0].json["stream"] == f"contact-{contact['id']}" and mine[1].json["data"]["campaign_id"] == cmp["id"]
    tampered = mine[0].body.replace(b"ada@", b"eve@")
    assert mine[0].headers["x-signature"] != "sha256=" + hmac.new(hook["secret"].encode(), tampered,
                                                                   hashlib.sha256).hexdigest()

    star = [r.json for r in receiver.requests if r.path == "/hook/all"]
    assert [b["type"] for b in star] == ["webhook.created", "contact.created", "campaign.created",
                                         "campaign.updated"]  # its own creation and the rival's: never
    assert star[0]["data"]["webhook_id"] == hook["id"] and "secret_enc" not in star[0]["data"]
    assert [b["id"] for b in star] == sorted(b["id"] for b in star)
    assert all(r.headers["x-webhook-id"] == everything["id"] for r in receiver.requests if r.path == "/hook/all")

    again = await eng.deliver_webhooks()
    assert again.delivered == 0 and len(receiver.requests) == 6
    state = await eng.webhook_deliveries(ws, hook["id"])
    assert state["checkpoint"] == state["scanned"] == star[-1]["id"] and state["deliveries"] == []


async def test_failed_delivery_retries_after_backoff_holding_its_campaign_only(
        db_url: str, clock: ManualClock, receiver: Receiver) -> None:
    async with engine_at(db_url, clock) as eng:
        ws = (await eng.create_workspace("acme")).id
        hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created", "campaign.updated"]})
        a = (await eng.create_campaign(ws, {"name": "A"}))["id"]
        failing = {a}
        receiver.answer = lambda body: 500 if body["data"]["campaign_id"] in failing else 200
        b = (await eng.create_campaign(ws, {"name": "B"}))["id"]
        await eng.update_campaign(ws, a, {"name": "A2"})
        await eng.update_campaign(ws, b, {"name": "B2"})

        first = await eng.deliver_webhooks()
        assert (first.delivered, first.failed, first.held) == (2, 1, 1)
        assert first.next_attempt_at == clock.now() + timedelta(seconds=30)
        assert [(x["type"], x["data"]["campaign_id"]) for x in receiver.delivered] == [
            ("campaign.created", b), ("campaign.updated", b)]  # B goes on while A waits
        state = await eng.webhook_deliveries(ws, hook["id"])
        a_created = state["deliveries"][0]["position"]
        assert [(d["status"], d["attempts"], d["last_status"]) for d in state["deliveries"]] == [
            ("retrying", 1, 500), ("held", 0, None)]
        assert state["checkpoint"] == a_created - 1  # never past an undelivered event

        clock.advance(timedelta(seconds=29))
        assert (await eng.deliver_webhooks()).delivered == 0 and len(receiver.requests) == 3  # not yet due
        clock.advance(timedelta(seconds=1))
        second = await eng.deliver_webhooks()
        assert (second.failed, second.delivered) == (1, 0) and len(receiver.requests) == 4
        assert second.next_attempt_at == clock.now() + timedelta(minutes=2)

        failing.clear()
        await eng.update_campaign(ws, b, {"name": "B3"})
        clock.advance(timedelta(minutes=2))
        third = await eng.deliver_webhooks()
        assert third.delivered == 3 and third.next_attempt_at is None
        a_bodies = [x for x in receiver.delivered if x["data"]["campaign_id"] == a]
        assert [x["type"] for x in a_bodies] == ["campaign.created", "campaign.updated"]  # in log order
        assert receiver.requests[-3].headers["x-webhook-attempt"] == "3"
        state = await eng.webhook_deliveries(ws, hook["id"])
        assert state["checkpoint"] == state["scanned"] == receiver.delivered[-1]["id"]
        assert [(d["position"], d["status"], d["attempts"]) for d in state["deliveries"]] == [
            (a_created, "delivered", 3)]  # the record of its attempts stays
        assert (await eng.deliver_webhooks()).delivered == 0


async def test_gives_up_after_max_attempts_and_moves_on(sqlite_url: str, clock: ManualClock,
                                                         receiver: Receiver) -> None:
    async with engine_at(sqlite_url, clock, webhook_max_attempts=3) as eng:
        ws = (await eng.create_workspace("acme")).id
        hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["*"]})
        a = (await eng.create_campaign(ws, {"name": "A"}))["id"]
        receiver.answer = lambda body: 500 if body["type"] == "campaign.created" else 200
        await eng.update_campaign(ws, a, {"name": "A2"})
        for wait in (0, 30, 120):
            clock.advance(timedelta(seconds=wait))
            report = await eng.deliver_webhooks()
        assert (report.dead, report.delivered) == (1, 1)  # the held update goes once the first is dead
        assert [x["type"] for x in receiver.delivered] == ["campaign.updated"]
        state = await eng.webhook_deliveries(ws, hook["id"])
        assert [(d["status"], d["attempts"]) for d in state["deliveries"]] == [("dead", 3)]
        assert state["checkpoint"] == receiver.delivered[-1]["id"]
        clock.advance(timedelta(days=1))
        assert (await eng.deliver_webhooks()).delivered == 0 and len(receiver.requests) == 4


async def test_hanging_endpoint_costs_at_most_the_timeout(sqlite_url: str, clock: ManualClock,
                                                          receiver: Receiver) -> None:
    async with engine_at(sqlite_url, clock, webhook_timeout=0.5, webhook_max_failures_per_pass=2) as eng:
        ws = (await eng.create_workspace("acme")).id
        hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
        for i in range(5):
            await eng.create_campaign(ws, {"name": f"C{i}"})
        receiver.hang = True
        started = time.monotonic()
        report = await eng.deliver_webhooks()
        elapsed = time.monotonic() - started
        assert report.failed == 2 and receiver.hanging == 2  # then the webhook rests until the next pass
        assert 0.9 < elapsed < 3.0
        state = await eng.webhook_deliveries(ws, hook["id"])
        assert [d["status"] for d in state["deliveries"]] == ["retrying", "retrying"]
        assert all("Timeout" in d["last_error"] for d in state["deliveries"])
        receiver.hang = False
        report = await eng.deliver_webhooks()  # the three not yet tried; the two failed wait 30 s
        assert report.delivered == 3
        clock.advance(timedelta(seconds=30))
        assert (await eng.deliver_webhooks()).delivered == 2
        assert len(receiver.delivered) == 5


async def test_tick_sends_while_the_webhook_endpoint_is_dead(sqlite_url: str, clock: ManualClock,
                                                             receiver: Receiver) -> None:
    with SmtpSink() as sink:
        async with engine_at(sqlite_url, clock, webhook_timeout=10) as eng:
            ws = (await eng.create_workspace("acme")).id
            await eng.create_webhook(ws, {"url": receiver.url, "events": ["*"]})
            refused = await eng.create_webhook(ws, {"url": f"http://127.0.0.1:{closed_port()}/h", "events": ["*"]})
            sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
            con = (await eng.create_contact(ws, {"email": "a@corp.io"}))["id"]
            cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "schedule": {"start_time": "00:00", "end_time": "24:00"}})
            await eng.enroll(ws, cmp["id"], {"contact_ids": [con]})
            await eng.launch_campaign(ws, cmp["id"])
            receiver.hang = True
            delivering = asyncio.create_task(eng.deliver_webhooks())
            for _ in range(200):
                if receiver.hanging:
                    break
                await asyncio.sleep(0.01)
            assert receiver.hanging == 1
            tick = await eng.tick()
            assert tick.sent == 1 and len(sink.messages) == 1 and not delivering.done()
            receiver.hang = False
            receiver.release.set()  # drops the hung connection without an answer, then answers 200
            report = await asyncio.wait_for(delivering, 5)
            assert report.failed >= 2 and report.delivered >= 1
            state = await eng.webhook_deliveries(ws, refused["id"])
            assert state["deliveries"][0]["last_error"].startswith("ConnectError")


async def test_deleted_webhook_receives_nothing_more(eng: CampaignEngine, clock: ManualClock,
                                                     receiver: Receiver) -> None:
    ws = (await eng.create_workspace("acme")).id
    hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
    await eng.create_campaign(ws, {"name": "A"})
    assert (await eng.deliver_webhooks()).delivered == 1
    receiver.answer = lambda body: 503
    await eng.create_campaign(ws, {"name": "B"})
    assert (await eng.deliver_webhooks()).failed == 1
    assert await _records(eng, hook["id"]) == (1, 1)  # its checkpoint and the retrying delivery
    await eng.delete_webhook(ws, hook["id"])
    assert await _records(eng, hook["id"]) == (0, 0)  # gone with it: nothing can read them any more
    receiver.answer = lambda body: 200
    await eng.create_campaign(ws, {"name": "C"})
    clock.advance(timedelta(hours=1))
    report = await eng.deliver_webhooks()
    assert report.webhooks == 0 and report.delivered == 0
    assert len(receiver.requests) == 2 and len(receiver.delivered) == 1


async def _records(eng: CampaignEngine, webhook_id: str) -> tuple[int, int]:
    """(checkpoint rows, delivery rows) kept for a webhook."""
    async with eng.store.reading() as conn:
        counts = []
        for table in (webhook_checkpoints, webhook_deliveries):
            counts.append(int((await conn.execute(select(func.count()).select_from(table).where(
                table.c.webhook_id == webhook_id))).scalar() or 0))
    return counts[0], counts[1]


async def test_records_of_webhooks_deleted_earlier_are_swept(eng: CampaignEngine, clock: ManualClock,
                                                             receiver: Receiver) -> None:
    """Records left by a webhook whose deletion did not clean up (an older version, a crash) go at
    the next pass; the live webhook's records stay."""
    ws = (await eng.create_workspace("acme")).id
    hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
    receiver.answer = lambda body: 503
    await eng.create_campaign(ws, {"name": "A"})
    assert (await eng.deliver_webhooks()).failed == 1
    at = "2026-01-05T08:00:00.000000Z"
    async with eng.store.write_engine.begin() as conn:  # what an old deletion left behind
        await conn.execute(webhook_checkpoints.insert().values(
            webhook_id="whk_gone", workspace_id=ws, position=1, scanned=1, updated_at=at))
        await conn.execute(webhook_deliveries.insert().values(
            webhook_id="whk_gone", position=2, workspace_id=ws, event_type="campaign.created", lane="",
            status="dead", attempts=10, updated_at=at))
    assert await _records(eng, "whk_gone") == (1, 1)
    await eng.deliver_webhooks()
    assert await _records(eng, "whk_gone") == (0, 0)
    assert await _records(eng, hook["id"]) == (1, 1)


async def test_concurrent_passes_deliver_each_event_once(db_url: str, clock: ManualClock,
                                                         receiver: Receiver) -> None:
    async with engine_at(db_url, clock) as eng:
        ws = (await eng.create_workspace("acme")).id
        await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
        for i in range(4):
            await eng.create_campaign(ws, {"name": f"C{i}"})
        receiver.delay = 0.05
        reports = await asyncio.gather(eng.deliver_webhooks(), eng.deliver_webhooks(), eng.deliver_webhooks())
        assert sum(r.delivered for r in reports) == 4
        ids = [b["id"] for b in receiver.delivered]
        assert len(ids) == 4 and ids == sorted(ids)


async def test_a_pass_killed_mid_delivery_loses_nothing(eng: CampaignEngine, receiver: Receiver) -> None:
    ws = (await eng.create_workspace("acme")).id
    hook = await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
    await eng.create_campaign(ws, {"name": "A"})
    await eng.create_campaign(ws, {"name": "B"})
    first_body: list[int] = []

    def hang_on_b(body: dict[str, Any]) -> int:
        first_body.append(body["id"])
        receiver.hang = True  # the next request hangs
        return 200

    receiver.answer = hang_on_b
    delivering = asyncio.create_task(eng.deliver_webhooks())
    for _ in range(200):
        if receiver.hanging:
            break
        await asyncio.sleep(0.01)
    delivering.cancel()  # the worker dies after A was answered 2xx, before anything was committed
    with pytest.raises(asyncio.CancelledError):
        await delivering
    state = await eng.webhook_deliveries(ws, hook["id"])
    assert state["checkpoint"] == state["scanned"] < first_body[0]  # nothing committed past A
    receiver.hang = False
    receiver.answer = lambda body: 200
    assert (await eng.deliver_webhooks()).delivered == 2  # A again (at least once), then B
    ids = [b["id"] for b in receiver.delivered]
    assert ids[0] == ids[1] == first_body[0] and len(ids) == 3
    state = await eng.webhook_deliveries(ws, hook["id"])
    assert state["checkpoint"] == ids[-1]


# -- destinations (SSRF): engine.delivery.lookups.destinations ------------------------------------------------
async def test_metadata_address_is_refused_at_creation_and_appends_nothing(engine: CampaignEngine, api: Api) -> None:
    metadata = {"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]}
    before = await engine.store.last_position()
    r = await api.post("/v1/webhooks", json=metadata)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["details"]["errors"] == [
        {"field": "url", "message": "webhooks may not call 169.254.169.254: link-local (cloud metadata)"}]
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_webhook(api.ws_id, metadata)
    assert refused.value.errors[0]["field"] == "url"
    mapped = {"url": "http://[::ffff:169.254.169.254]/", "events": ["*"]}
    assert (await api.post("/v1/webhooks", json=mapped)).status_code == 422
    assert await engine.store.last_position() == before
    assert (await api.get("/v1/webhooks")).json()["data"] == []


async def test_private_addresses_refused_when_the_option_is_off(sqlite_url: str, clock: ManualClock,
                                                               receiver: Receiver) -> None:
    async with engine_at(sqlite_url, clock, webhook_allow_private_addresses=False, webhook_max_attempts=3) as eng:
        ws = await eng.create_workspace("acme")
        before = await eng.store.last_position()
        with pytest.raises(ValidationFailed) as refused:
            await eng.create_webhook(ws.id, {"url": receiver.url, "events": ["*"]})
        assert refused.value.errors[0]["message"].startswith("webhooks may not call 127.0.0.1: loopback")
        app = create_app(eng)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            r = await http.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]},
                                headers={"Authorization": f"Bearer {ws.api_key}"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_failed"
        assert await eng.store.last_position() == before

        # A name is accepted at creation (no DNS there) and refused at every delivery: it resolves to loopback.
        hook = await eng.create_webhook(ws.id, {"url": f"http://localhost:{receiver.port}/hook",
                                                "events": ["campaign.created"]})
        await eng.create_campaign(ws.id, {"name": "A"})
        first = await eng.deliver_webhooks()
        assert (first.delivered, first.failed) == (0, 1)
        assert first.next_attempt_at == clock.now() + timedelta(seconds=30)
        state = await eng.webhook_deliveries(ws.id, hook["id"])
        [delivery] = state["deliveries"]
        assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("retrying", 1, None)
        assert delivery["last_error"].startswith("destination refused: localhost resolves to 127.0.0.1: loopback")
        for wait in (30, 120):
            clock.advance(timedelta(seconds=wait))
            report = await eng.deliver_webhooks()
        assert (report.dead, report.delivered) == (1, 0)
        state = await eng.webhook_deliveries(ws.id, hook["id"])
        assert [(d["status"], d["attempts"]) for d in state["deliveries"]] == [("dead", 3)]
        assert "destination refused" in state["deliveries"][0]["last_error"]
        assert receiver.requests == []


async def test_by_default_loopback_is_called_through_the_vetted_address(eng: CampaignEngine,
                                                                       receiver: Receiver) -> None:
    ws = (await eng.create_workspace("acme")).id
    await eng.create_webhook(ws, {"url": receiver.url, "events": ["campaign.created"]})
    # The receiver listens on 127.0.0.1 only: the name is resolved once, the request goes to the address,
    # and the Host header keeps the name.
    await eng.create_webhook(ws, {"url": f"http://localhost:{receiver.port}/by-name", "events": ["campaign.created"]})
    await eng.create_campaign(ws, {"name": "A"})
    report = await eng.deliver_webhooks()
    assert (report.delivered, report.failed) == (2, 0)
    hosts = sorted((r.path, r.headers["host"]) for r in receiver.requests)
    assert hosts == [("/by-name", f"localhost:{receiver.port}"), ("/hook", f"127.0.0.1:{receiver.port}")]


async def test_runtime_delivers_a_new_event_without_waiting_for_the_interval(eng: CampaignEngine,
                                                                              receiver: Receiver) -> None:
    """Given a running loop whose webhook interval is an hour; when a subscribed event commits;
    then its delivery starts from the commit (an after-commit wake-up), not from the interval."""
    ws = (await eng.create_workspace("acme")).id
    await eng.create_webhook(ws, {"url": receiver.url, "events": ["contact.created"]})
    stop = asyncio.Event()
    loop = asyncio.create_task(eng.run(stop, webhook_seconds=3600, safety_seconds=3600, poll_seconds=3600))
    try:
        await asyncio.sleep(0.2)  # the loop is up
        await eng.create_contact(ws, {"email": "ada@corp.io"})
        for _ in range(200):  # bounded: 10 s at most, far below the hour-long interval
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
        assert [r.json["type"] for r in receiver.requests] == ["contact.created"]
    finally:
        stop.set()
        await loop
