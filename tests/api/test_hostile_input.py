"""Hostile input is answered cleanly: out-of-range numbers, deep nesting, NaN/Infinity, server errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from engine import CampaignEngine, create_app
from tests.conftest import Api

HUGE = "99999999999999999999"  # 20 digits: beyond 2^63 - 1


def assert_validation_failed(response: httpx.Response, field: str | None = None) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    if field is not None:
        assert field in [item["field"] for item in error["details"]["errors"]]


async def campaign_id(api: Api) -> str:
    response = await api.post("/v1/campaigns", json={"name": "hostile"})
    assert response.status_code == 201
    return str(response.json()["id"])


@pytest.mark.parametrize("path, field", [
    ("/v1/senders?page=2035915594646273024", "page"),  # below 2^63, but its OFFSET overflows
    (f"/v1/senders?page={HUGE}", "page"),
    ("/v1/senders?page=0", "page"),
    (f"/v1/senders?per_page={HUGE}", "per_page"),
    (f"/v1/contacts?page=-{HUGE}", "page"),
    (f"/v1/events?after={HUGE}", "after"),
    (f"/v1/events?limit={HUGE}", "limit"),
    ("/v1/events?after=9223372036854775808", "after"),
    (f"/v1/forecast?days={HUGE}", "days"),
    ("/v1/forecast?days=0", "days"),
    ("/v1/forecast?days=91", "days"),
    (f"/v1/campaigns?page={HUGE}", "page"),
])
async def test_out_of_range_query_numbers_are_422(api: Api, path: str, field: str) -> None:
    assert_validation_failed(await api.get(path), field)


@pytest.mark.parametrize("suffix, field", [
    (f"/activity?after={HUGE}", "after"),
    (f"/activity?limit={HUGE}", "limit"),
    (f"/enrollments?batch_number={HUGE}", "batch_number"),
    (f"/enrollments?page={HUGE}", "page"),
    (f"/preview?step={HUGE}", "step"),
    (f"/forecast?days={HUGE}", "days"),
    ("/forecast?days=0", "days"),
    (f"/skips?limit={HUGE}", "limit"),
    (f"/replies?limit={HUGE}", "limit"),
])
async def test_out_of_range_campaign_query_numbers_are_422(api: Api, suffix: str, field: str) -> None:
    cid = await campaign_id(api)
    assert_validation_failed(await api.get(f"/v1/campaigns/{cid}{suffix}"), field)


async def test_the_largest_integer_is_still_accepted(api: Api) -> None:
    response = await api.get("/v1/events?after=9223372036854775807")
    assert response.status_code == 200
    assert response.json()["data"] == []


@pytest.mark.parametrize("depth", [65, 5_000, 30_000])
async def test_deeply_nested_json_is_422(api: Api, depth: int) -> None:
    body = '{"name": "x", "tags": ' + "[" * depth + "]" * depth + "}"
    response = await api.post("/v1/campaigns", content=body, headers={"Content-Type": "application/json"})
    assert_validation_failed(response, "body")
    levels = min(depth, 1_500)  # a filter level is 32 bytes: stay under the test app's 64 KiB body limit
    nested_filter = '{"filter": ' + '{"operator": "and", "rules": [' * levels + "]}" * levels + "}"
    cid = await campaign_id(api)
    response = await api.post(f"/v1/campaigns/{cid}/enrollments", content=nested_filter,
                              headers={"Content-Type": "application/json"})
    assert_validation_failed(response, "body")


async def test_reasonable_nesting_is_still_accepted(api: Api) -> None:
    rules: dict[str, Any] = {"operator": "and", "rules": [{"field": "email", "op": "exists"}]}
    for _ in range(10):
        rules = {"operator": "or", "rules": [rules]}
    cid = await campaign_id(api)
    response = await api.post(f"/v1/campaigns/{cid}/enrollments", json={"filter": rules})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", HUGE, "-" + HUGE,
                                    "1" * 5000])
async def test_non_finite_or_huge_numbers_are_422_and_write_nothing(api: Api, engine: CampaignEngine,
                                                                    number: str) -> None:
    before = len((await engine.list_events(api.ws_id, limit=1000))["data"])
    body = '{"email": "nan@example.com", "custom_fields": {"n": ' + number + "}}"
    response = await api.post("/v1/contacts", content=body, headers={"Content-Type": "application/json"})
    assert_validation_failed(response, "body")
    assert (await api.get("/v1/contacts")).json()["pagination"]["total"] == 0
    assert len((await engine.list_events(api.ws_id, limit=1000))["data"]) == before


@pytest.mark.parametrize("method, path", [
    ("PATCH", "/v1/campaigns/{cid}"),
    ("PUT", "/v1/campaigns/{cid}/schedule"),
    ("POST", "/v1/senders"),
    ("POST", "/v1/contacts/import"),
    ("POST", "/v1/api_keys"),
])
async def test_infinity_is_refused_by_every_json_route(api: Api, method: str, path: str) -> None:
    cid = await campaign_id(api)
    response = await api.request(method, path.format(cid=cid), content='{"max_per_hour": Infinity}',
                                 headers={"Content-Type": "application/json"})
    assert_validation_failed(response, "body")


async def test_invalid_json_stays_400(api: Api) -> None:
    response = await api.post("/v1/contacts", content="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_method_not_allowed_names_the_allowed_methods(api: Api) -> None:
    response = await api.request("TRACE", "/v1/senders")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


@pytest.fixture
async def broken_app(engine: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a route that fails the way an unforeseen bug would."""
    app: FastAPI = create_app(engine)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("an unforeseen bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_server_error_has_the_json_envelope_and_a_request_id(broken_app: httpx.AsyncClient) -> None:
    response = await broken_app.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert "unforeseen" not in error["message"]  # no internals leak to the client
    assert error["details"]["request_id"] == response.headers["x-request-id"]
    assert len(error["details"]["request_id"]) >= 16
