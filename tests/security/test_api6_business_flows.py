"""OWASP API6:2023 Unrestricted Access to Sensitive Business Flows: sending mail is the flow to protect.

It applies: a stolen or abused key could turn the engine into a spam cannon. Given a workspace
whose monthly limit is used up (or would be passed); when it launches, dispatches or test-sends;
then 402 ``plan_limit_reached``, no message reaches the SMTP server and nothing is appended. Given a
key over its per-minute rate; then test sends stop with 429 ``rate_limited`` and ``Retry-After``
before anything more is sent. A test send reaches at most 20 addresses per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.conftest import Api
from tests.delivery.smtp_server import SmtpSink
from tests.security.conftest import created, last_position

TWO_STEPS = [{"subject": "One", "body_html": "<p>1</p>"}, {"subject": "Two", "body_html": "<p>2</p>",
                                                           "delay": {"days": 1}}]
ALWAYS = {"timezone": "UTC", "start_time": "00:00", "end_time": "24:00", "every_minutes": 1}


async def sending_campaign(api: Api, sink: SmtpSink, contacts: int, first: int = 0) -> str:
    sender = await created(api, "/v1/senders", {"email": f"rep{first}@flows.io", "daily_limit": 500,
                                                "smtp": {"host": sink.host, "port": sink.port, "security": "none"}})
    campaign = await created(api, "/v1/campaigns", {"name": "flow", "sender_ids": [sender["id"]],
                                                    "steps": TWO_STEPS, "schedule": ALWAYS})
    ids = [(await created(api, "/v1/contacts", {"email": f"p{i}@corp-flows.io"}))["id"]
           for i in range(first, first + contacts)]
    await created(api, f"/v1/campaigns/{campaign['id']}/enrollments", {"contact_ids": ids})
    return str(campaign["id"])


@pytest.fixture
async def tiny(engine: CampaignEngine, http: httpx.AsyncClient) -> Api:
    """A workspace allowed 2 emails a month."""
    workspace = await engine.create_workspace("tiny plan", monthly_limit=2)
    return Api(http, workspace.id, workspace.api_key)


async def test_the_monthly_limit_stops_every_sending_flow(engine: CampaignEngine, clock: ManualClock,
                                                          tiny: Api, sink: SmtpSink) -> None:
    campaign = await sending_campaign(tiny, sink, contacts=3)
    before = await last_position(engine)
    # 1 address x 2 steps would fit; 2 addresses x 2 steps would not
    over = await tiny.post(f"/v1/campaigns/{campaign}/test_send", json={"emails": ["a@qa-flows.io", "b@qa-flows.io"]})
    assert over.status_code == 402 and over.json()["error"]["code"] == "plan_limit_reached"
    assert sink.messages == [] and await last_position(engine) == before
    # use the month up: launch, and send until the limit holds the rest back
    assert (await tiny.post(f"/v1/campaigns/{campaign}/launch")).status_code == 200
    for _ in range(10):
        await engine.tick()
        clock.advance(timedelta(minutes=1))
    assert len(sink.messages) == 2, [m.headers["To"] for m in sink.messages]
    assert (await tiny.get("/v1/account")).json()["sent_this_month"] == 2
    second = await sending_campaign(tiny, sink, contacts=1, first=3)
    before = await last_position(engine)
    refused = [await tiny.post(f"/v1/campaigns/{campaign}/test_send", json={"emails": ["a@qa-flows.io"]}),
               await tiny.post(f"/v1/campaigns/{second}/launch")]
    for answer in refused:
        assert answer.status_code == 402 and answer.json()["error"]["code"] == "plan_limit_reached", answer.text
    assert len(sink.messages) == 2 and await last_position(engine) == before


async def test_a_test_send_reaches_at_most_20_addresses(engine: CampaignEngine, api: Api, sink: SmtpSink) -> None:
    campaign = await sending_campaign(api, sink, contacts=1)
    before = await last_position(engine)
    answer = await api.post(f"/v1/campaigns/{campaign}/test_send",
                            json={"emails": [f"q{i}@qa-flows.io" for i in range(21)]})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "validation_failed"
    assert sink.messages == [] and await last_position(engine) == before


@pytest.fixture
async def slow_app(engine: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a per-key rate of 3 requests a minute."""
    app = create_app(engine, rate_limit_per_minute=3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_a_key_over_its_rate_cannot_keep_test_sending(engine: CampaignEngine, api: Api, sink: SmtpSink,
                                                            slow_app: httpx.AsyncClient) -> None:
    campaign = await sending_campaign(api, sink, contacts=1)
    limited = Api(slow_app, api.ws_id, api.key)
    answers = [await limited.post(f"/v1/campaigns/{campaign}/test_send", json={"emails": ["me@qa-flows.io"]})
               for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json()["error"]["code"] == "rate_limited" and int(answers[3].headers["Retry-After"]) >= 1
    assert len(sink.messages) == 3 * len(TWO_STEPS)


async def test_a_test_send_never_reaches_a_suppressed_address(engine: CampaignEngine, api: Api, sink: SmtpSink) -> None:
    """Given an address and a domain on the suppression list; when a test send names either (in any
    case); then 422 ``validation_failed`` naming ``emails.N``, nothing sent and nothing appended."""
    campaign = await sending_campaign(api, sink, contacts=1)
    await created(api, "/v1/suppressions", {"email": "complained@corp-flows.io"})
    await created(api, "/v1/suppressions", {"domain": "blocked-domain.io"})
    before = await last_position(engine)
    for address in ("complained@corp-flows.io", "anyone@blocked-domain.io", "Complained@CORP-flows.io"):
        answer = await api.post(f"/v1/campaigns/{campaign}/test_send", json={"emails": ["ok@qa-flows.io", address]})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "validation_failed"
        assert [detail["field"] for detail in error["details"]["errors"]] == ["emails.1"], error
    assert sink.messages == [] and await last_position(engine) == before
    # an address not suppressed still gets its test
    answer = await api.post(f"/v1/campaigns/{campaign}/test_send", json={"emails": ["ok@qa-flows.io"]})
    assert answer.status_code == 200, answer.text
    assert len(sink.messages) == 2
