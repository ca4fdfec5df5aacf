"""Schemathesis fuzzes every operation of the OpenAPI document against the ASGI app, in process.

Seeded (``derandomize``) and bounded (``MAX_EXAMPLES`` per operation, about a minute on two
cores), with a valid API key, so the requests get past auth and reach the engine. The checks:
no server error, every status code and content type declared, every answer (success or error
envelope) valid against its schema, declared response headers present.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine import CampaignEngine, ManualClock, create_app
from engine.api.openapi import OPERATIONS
from tests.conftest import SECRET

MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
AUTH: dict[str, str] = {}


def fuzzed_app() -> FastAPI:
    """The real app; its lifespan opens a fresh engine in schemathesis' event loop (one loop for all calls)."""
    app = create_app(None, rate_limit_per_minute=0)  # the fuzzer is one client sending far over any fair rate

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        folder = tempfile.mkdtemp(prefix="ce-fuzz-")
        async with AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, folder, True)
            clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
            engine = await stack.enter_async_context(
                CampaignEngine(f"sqlite+aiosqlite:///{folder}/fuzz.db", clock=clock, secret_key=SECRET))
            workspace = await engine.create_workspace("fuzz", monthly_limit=1000)
            AUTH["Authorization"] = f"Bearer {workspace.api_key}"
            app.state.engine = engine
            yield

    app.router.lifespan_context = lifespan
    return app


APP = fuzzed_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_every_operation_is_described() -> None:
    """Each /v1 operation has a typed answer; each one that reads a JSON body declares it."""
    document = APP.openapi()
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/v1/"):
                continue
            if (method, path) not in OPERATIONS:
                missing.append(f"{method.upper()} {path}")
            success = next(code for code in operation["responses"] if code.startswith("2"))
            assert "content" in operation["responses"][success], f"{method} {path}"
            assert operation["security"] == [{"bearerAuth": []}]
            assert operation["responses"]["422"] == {"$ref": "#/components/responses/Error422"}
    assert not missing, f"add these to engine.api.openapi.OPERATIONS: {missing}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(headers=dict(AUTH), checks=CHECKS)


async def test_docs_work_offline(http: httpx.AsyncClient) -> None:
    """/docs and /redoc load their assets from the app itself, never from a CDN."""
    for page, asset in (("/docs", "/docs/static/swagger-ui-bundle.js"), ("/redoc", "/docs/static/redoc.standalone.js")):
        response = await http.get(page)
        assert response.status_code == 200
        assert asset in response.text
        assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text
        script = await http.get(asset)
        assert script.status_code == 200 and len(script.content) > 100_000
    assert (await http.get("/docs/static/swagger-ui.css")).status_code == 200
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")  # Swagger UI's Authorize button
