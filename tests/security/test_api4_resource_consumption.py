"""OWASP API4:2023 Unrestricted Resource Consumption: every declared limit holds, cleanly, writing nothing.

Given the limits the API declares (the body size cap, ``per_page`` at most 200, ``limit``, ``days``
and page ranges on query parameters, ``maxLength``/``maxItems`` on body properties, a JSON nesting
depth of 64) read from the OpenAPI document where it says them, so that a new parameter or property
is checked too; when a request goes one step beyond each (or far beyond: bodies streamed without a
length, nesting thousands deep); then the answer is a 4xx with the error envelope, never a 5xx, and
the log is unchanged. There is no row cap on imports other than the body cap: the import test
shows that cap holds for JSON, CSV and multipart uploads alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from engine import CampaignEngine
from engine.api.support import MAX_JSON_DEPTH
from tests.conftest import Api
from tests.security.conftest import Victim, fresh, last_position, resolve, valid_bodies

CAP = 64 * 1024  # the shared test app's max_body_bytes


def assert_refused(answer: Any, *statuses: int) -> dict[str, Any]:
    assert answer.status_code in statuses, (answer.request.method, str(answer.request.url)[:200], answer.text[:300])
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] and error["message"]
    return error


SIZE_PARAMETERS = ("page", "per_page", "limit", "days")
"""Query parameters that size the work of one request: how many rows, how deep, how many days."""


async def test_size_parameters_beyond_their_declared_range_are_422(engine: CampaignEngine, victim: Victim) -> None:
    """``per_page`` over 200, ``limit`` over its maximum, a page past the last one SQL can offset, ``days``
    over 90: on every operation that takes them, 422 naming the parameter; the largest allowed value works."""
    api = victim.api
    document = (await api.client.get("/openapi.json")).json()
    checked: list[str] = []
    failures: list[str] = []
    before = await last_position(engine)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                name = parameter["name"]
                if parameter["in"] != "query" or schema.get("type") != "integer":
                    continue
                if name in SIZE_PARAMETERS:
                    assert "maximum" in schema, (path, name, schema)
                elif "maximum" not in schema or "minimum" not in schema:
                    continue  # every other integer with a declared range is held to it too (what-ifs...)
                target = path.format_map(victim.ids)
                for value in (schema["maximum"] + 1, schema["minimum"] - 1, 10**30):
                    answer = await api.request(method.upper(), f"{target}?{name}={value}")
                    details = answer.json().get("error", {}).get("details", {})
                    fields = [e.get("field") for e in details.get("errors", [])]
                    if answer.status_code != 422 or name not in fields:
                        failures.append(f"{method} {path}?{name}={value}: {answer.status_code} {answer.text[:100]}")
                edge = await api.request(method.upper(), f"{target}?{name}={schema['maximum']}")
                if name in SIZE_PARAMETERS and edge.status_code != 200:
                    failures.append(f"{method} {path}?{name}={schema['maximum']}: {edge.status_code} {edge.text[:100]}")
                checked.append(f"{path}?{name}")
    assert len(checked) >= 15, checked  # every listing's page and per_page, the limits, the forecasts' days
    assert {"/v1/contacts?per_page", "/v1/events?limit", "/v1/campaigns/{campaign_id}/activity?limit",
            "/v1/campaigns/{campaign_id}/forecast?senders_add"} <= set(checked)
    assert not failures, "\n".join(failures)
    assert await last_position(engine) == before


async def test_deep_json_is_422_on_every_json_route(engine: CampaignEngine, victim: Victim) -> None:
    """A valid body with one property nested past the limit: refused before anything is parsed further."""
    api = victim.api
    document = (await api.client.get("/openapi.json")).json()
    spare = (await api.post("/v1/contacts", json={"email": fresh("deep")})).json()["id"]
    makers = valid_bodies(victim, spare)
    before = await last_position(engine)
    routes = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            routes += 1
            base = makers[(method, path)]() if (method, path) in makers else [{"email": fresh("row")}]
            for depth in (MAX_JSON_DEPTH + 1, 2_000):
                shell = {**base, "deep": "HERE"} if isinstance(base, dict) else [*base, "HERE"]
                body = json.dumps(shell).replace('"HERE"', "[" * depth + '"leaf"' + "]" * depth)
                answer = await api.request(method.upper(), path.format_map(victim.ids), content=body,
                                           headers={"Content-Type": "application/json"})
                error = assert_refused(answer, 422)
                assert error["code"] == "validation_failed" and "nested" in str(error["details"]), answer.text
    assert routes >= 20
    assert await last_position(engine) == before


def over_limit(schema: dict[str, Any]) -> Any:
    """A value one past the property's declared length, or None when it declares none."""
    if schema.get("type") == "string" and "maxLength" in schema:
        return "x" * (schema["maxLength"] + 1)
    if schema.get("type") == "array" and "maxItems" in schema:
        return ["x"] * (schema["maxItems"] + 1)
    for option in schema.get("anyOf", []):
        found = over_limit(option)
        if found is not None:
            return found
    return None


async def test_strings_and_arrays_beyond_their_declared_length_are_refused(engine: CampaignEngine,
                                                                          victim: Victim) -> None:
    api = victim.api
    document = (await api.client.get("/openapi.json")).json()
    spare = (await api.post("/v1/contacts", json={"email": fresh("long")})).json()["id"]
    makers = valid_bodies(victim, spare)
    before = await last_position(engine)
    checked = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body_schema = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body_schema is None or (method, path) not in makers:
                continue
            for name, prop in resolve(document, body_schema["schema"]).get("properties", {}).items():
                value = over_limit(prop)
                if value is None:
                    continue
                answer = await api.request(method.upper(), path.format_map(victim.ids),
                                           json={**makers[(method, path)](), name: value})
                # 413 when one past the limit is already over the body cap (a 1 MB template)
                error = assert_refused(answer, 422, 413)
                if answer.status_code == 422:
                    assert any(e["field"].split(".")[0] == name for e in error["details"]["errors"]), answer.text
                checked.append(f"{method} {path} {name}")
    assert len(checked) >= 20, checked
    assert await last_position(engine) == before


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body sent without Content-Length, in 8 KiB pieces: the cap must count what arrives."""
    yield b'[{"email": "first@security-test.io"}'
    sent = 0
    while sent < total:
        piece = b', {"email": "row@security-test.io"}' * 200
        sent += len(piece)
        yield piece
    yield b"]"


async def test_bodies_over_the_cap_are_413_and_write_nothing(engine: CampaignEngine, api: Api) -> None:
    before = await last_position(engine)
    big_rows = [{"email": f"r{i}@security-test.io"} for i in range(CAP // 20)]
    csv = "email\n" + "".join(f"c{i}@security-test.io\n" for i in range(CAP // 20))
    attempts = [
        api.post("/v1/contacts", json={"email": "a@security-test.io", "custom_fields": {"x": "y" * CAP}}),
        api.post("/v1/contacts/import", json=big_rows),
        api.post("/v1/contacts/import", content=chunks(2 * CAP), headers={"Content-Type": "application/json"}),
        api.post("/v1/contacts/import", content=csv.encode(), headers={"Content-Type": "text/csv"}),
        api.post("/v1/contacts/import", files={"file": ("big.csv", csv.encode(), "text/csv")}),
        api.post("/v1/campaigns", json={"name": "n", "steps": [{"subject": "s", "body_html": "x" * (CAP + 1)}]}),
    ]
    for attempt in attempts:
        error = assert_refused(await attempt, 413)
        assert error["code"] == "payload_too_large"
    assert await last_position(engine) == before
    assert (await api.get("/v1/contacts")).json()["pagination"]["total"] == 0


async def test_oversized_headers_and_query_strings_are_bounded(engine: CampaignEngine, api: Api) -> None:
    before = await last_position(engine)
    search = await api.get("/v1/contacts", params={"q": "x" * 8000})
    assert search.status_code == 200 and search.json()["data"] == []
    long_key = await api.post("/v1/contacts", json={"email": "k@security-test.io"},
                              headers={"Idempotency-Key": "k" * 256})
    assert_refused(long_key, 400)
    echoed = await api.get("/v1/account", headers={"X-Request-Id": "r" * 10_000})
    assert echoed.status_code == 200 and len(echoed.headers["x-request-id"]) <= 64
    assert await last_position(engine) == before
