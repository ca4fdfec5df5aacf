"""Operations endpoints: /healthz, /readyz (database, runtime loop, lag) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from engine import CampaignEngine, ManualClock, create_app, metrics
from engine.runtime import runtime_of
from engine.service.inbound import PollReport
from tests.conftest import PG_DSN, SECRET, Api, pg_database


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(body: str, name: str) -> float:
    """The value of an unlabelled series in a text exposition."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_healthz_and_readyz_need_no_key(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await http.get("/readyz")  # no loop in this process, and the engine does not require one
    assert r.status_code == 200
    assert r.json() == {"database": "ok", "runtime": "not_running", "lag_seconds": None}


async def test_readyz_follows_the_runtime_loop(engine: CampaignEngine, clock: ManualClock,
                                               http: httpx.AsyncClient) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(engine.run(stop))
    try:
        await wait_for(lambda: (found := runtime_of(engine)) is not None and found.ticks >= 1)
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json() == {"database": "ok", "runtime": "ticking", "lag_seconds": 0.0}

        # nothing due: the loop owes a tick at the latest one safety interval (300 s) after the last one
        clock.advance(timedelta(seconds=400))
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["lag_seconds"] == 100.0
        clock.advance(timedelta(hours=1))
        r = await http.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["database"] == "ok" and body["runtime"] == "lagging" and body["lag_seconds"] == 3700.0
        assert body["error"]["code"] == "not_ready" and "runtime lagging" in body["error"]["message"]
        assert scraped((await http.get("/metrics")).text, "campaign_engine_runtime_lag_seconds") == 3700.0

        found = runtime_of(engine)
        assert found is not None
        found.wake()  # as a command that creates work wakes the loop: it catches up
        await wait_for(lambda: (found := runtime_of(engine)) is not None and found.lag_seconds(clock.now()) == 0)
        assert (await http.get("/readyz")).json()["runtime"] == "ticking"
    finally:
        stop.set()
        await loop
    assert runtime_of(engine) is None
    assert (await http.get("/readyz")).json()["runtime"] == "not_running"


async def test_readyz_when_the_runtime_is_required(sqlite_url: str, clock: ManualClock) -> None:
    """``serve`` runs the loop itself: until it runs (or once it stopped), the server is not ready."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, ready_requires_runtime=True) as engine:
        app = create_app(engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["runtime"] == "not_running"
            assert r.json()["error"]["details"] == {"database": "ok", "runtime": "not_running", "lag_seconds": None}
            stop = asyncio.Event()
            loop = asyncio.create_task(engine.run(stop))
            try:
                await wait_for(lambda: (found := runtime_of(engine)) is not None and found.ticks >= 1)
                assert (await client.get("/readyz")).status_code == 200
            finally:
                stop.set()
                await loop


@pytest.mark.postgres
async def test_readyz_when_the_database_is_gone(clock: ManualClock) -> None:
    async with pg_database() as url:
        async with CampaignEngine(url, clock=clock, secret_key=SECRET, ready_database_timeout=5) as engine:
            app = create_app(engine)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                assert (await client.get("/readyz")).status_code == 200
                admin = await asyncpg.connect(PG_DSN)
                try:
                    await admin.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
                finally:
                    await admin.close()
                r = await client.get("/readyz")
                assert r.status_code == 503
                assert r.json()["database"] == "unavailable" and r.json()["error"]["code"] == "not_ready"
                assert (await client.get("/healthz")).status_code == 200
                r = await client.get("/metrics")  # the counters are still served
                assert r.status_code == 200 and "campaign_engine_emails_total" in r.text


async def test_metrics_exposition(api: Api, engine: CampaignEngine, clock: ManualClock) -> None:
    r = await api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in ("campaign_engine_emails_total", "campaign_engine_tick_duration_seconds_bucket",
                 "campaign_engine_inbound_messages_total", "campaign_engine_webhook_deliveries_total",
                 "campaign_engine_api_requests_total", "campaign_engine_due_emails",
                 "campaign_engine_oldest_due_email_lag_seconds"):
        assert name in r.text, name
    assert 'campaign_engine_emails_total{outcome="sent"}' in r.text  # present at 0 before any send
    assert "campaign_engine_runtime_lag_seconds" not in r.text  # no loop in this process

    sent = sample("campaign_engine_emails_total", outcome="sent")
    metrics.record_email_outcome("sent", 3)
    metrics.record_email_outcome("bounced")
    metrics.record_email_outcome("sent", 0)
    assert sample("campaign_engine_emails_total", outcome="sent") == sent + 3
    ticks = sample("campaign_engine_tick_duration_seconds_count")
    metrics.observe_tick(0.2)
    assert sample("campaign_engine_tick_duration_seconds_count") == ticks + 1
    assert re.search(r'campaign_engine_emails_total\{outcome="sent"\} \d', (await api.client.get("/metrics")).text)


async def test_api_requests_are_counted_by_route_template(api: Api) -> None:
    route = "/v1/campaigns/{campaign_id}"
    before = sample("campaign_engine_api_requests_total", method="GET", route=route, status="404")
    await api.get("/v1/campaigns/cmp_one")
    await api.get("/v1/campaigns/cmp_two")
    assert sample("campaign_engine_api_requests_total", method="GET", route=route, status="404") == before + 2
    assert sample("campaign_engine_api_requests_total", method="GET", route="/v1/campaigns/cmp_one",
                  status="404") == 0
    unmatched = sample("campaign_engine_api_requests_total", method="GET", route="unmatched", status="404")
    await api.get("/no/such/path")
    assert sample("campaign_engine_api_requests_total", method="GET", route="unmatched", status="404") == unmatched + 1
    unauthorized = sample("campaign_engine_api_requests_total", method="GET", route="/v1/account", status="401")
    await api.client.get("/v1/account")
    assert sample("campaign_engine_api_requests_total", method="GET", route="/v1/account",
                  status="401") == unauthorized + 1
    assert sample("campaign_engine_api_request_duration_seconds_count", method="GET", route=route) >= 2


@pytest.fixture
async def launched(engine: CampaignEngine) -> AsyncIterator[str]:
    ws = (await engine.create_workspace("queue")).id
    sid = (await engine.create_sender(ws, {"email": "r@s.io", "smtp": {"host": "127.0.0.1", "port": 9,
                                                                       "security": "none"}}))["id"]
    cmp = await engine.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
        {"subject": "s", "body_html": "b"}], "schedule": {"every_minutes": 60}})
    for n in range(3):
        con = (await engine.create_contact(ws, {"email": f"a{n}@corp.io"}))["id"]
        await engine.enroll(ws, cmp["id"], {"contact_ids": [con]})
    await engine.launch_campaign(ws, cmp["id"])
    yield ws


async def test_queue_gauges_are_read_at_scrape_time(launched: str, engine: CampaignEngine, clock: ManualClock,
                                                    http: httpx.AsyncClient) -> None:
    body = (await http.get("/metrics")).text
    assert scraped(body, "campaign_engine_due_emails") == 3.0
    assert scraped(body, "campaign_engine_oldest_due_email_lag_seconds") == 0.0
    clock.advance(timedelta(minutes=10))
    body = (await http.get("/metrics")).text
    assert scraped(body, "campaign_engine_due_emails") == 3.0
    assert scraped(body, "campaign_engine_oldest_due_email_lag_seconds") == 600.0
    cid = (await engine.list_campaigns(launched))["data"][0]["id"]
    await engine.pause_campaign(launched, cid)  # a paused campaign's emails wait on purpose
    body = (await http.get("/metrics")).text
    assert scraped(body, "campaign_engine_due_emails") == 0.0
    assert scraped(body, "campaign_engine_oldest_due_email_lag_seconds") == 0.0


async def test_inbound_messages_and_webhook_deliveries_are_counted(engine: CampaignEngine) -> None:
    ws = (await engine.create_workspace("counted")).id
    kind = sample("campaign_engine_inbound_messages_total", kind="message")
    raw = b"From: someone@corp.io\r\nTo: rep@sales.io\r\nMessage-ID: <m1@corp.io>\r\nSubject: hello\r\n\r\nHi there\r\n"
    async with engine.store.transaction() as conn:
        await engine.handle_inbound(conn, ws, raw, PollReport())
        await engine.handle_inbound(conn, ws, raw, PollReport())  # the same message again is not counted
    assert sample("campaign_engine_inbound_messages_total", kind="message") == kind + 1

    failed = sample("campaign_engine_webhook_deliveries_total", outcome="failed")
    await engine.create_webhook(ws, {"url": "http://127.0.0.1:9/hook", "events": ["contact.created"]})
    await engine.create_contact(ws, {"email": "b@corp.io"})
    await engine.deliver_webhooks()  # nothing listens on port 9: a failed attempt
    assert sample("campaign_engine_webhook_deliveries_total", outcome="failed") == failed + 1
