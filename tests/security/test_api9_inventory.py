"""OWASP API9:2023 Improper Inventory Management: the OpenAPI document is the whole API.

Given the routes the app really serves (walked from its routing table, not from the document);
then each one is in ``/openapi.json`` with its method, and each documented operation is served:
no hidden route besides the documentation pages and their assets, no documented route that is
gone. Every documented operation says whether it needs a key: ``/v1`` ones require bearer auth,
the others (probes, recipients' links) are marked as needing none. Paths outside the inventory
answer 404 ``not_found`` whatever the method (no catch-all; a trailing slash is redirected to
the documented path), and a documented path answers 405 to a
method it does not document.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from tests.conftest import Api
from tests.security.conftest import DOCS_PATHS, served_operations

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, operations in document["paths"].items() for method in operations
            if method in ("get", "post", "put", "patch", "delete", "head", "options")}


async def test_the_document_lists_exactly_the_served_routes(api: Api) -> None:
    app: FastAPI = api.client._transport.app  # type: ignore[attr-defined]
    document = (await api.client.get("/openapi.json")).json()
    served = {(method, path) for method, path in served_operations(app) if not path.startswith(DOCS_PATHS)}
    served_docs = {path for _, path in served_operations(app) if path.startswith(DOCS_PATHS)}
    assert served_docs <= {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/docs/static/{path}"}
    # the app's own HEAD next to GET of /openapi.json is a docs asset; other HEADs must be documented
    listed = documented(document)
    assert served - listed == set(), f"served but not documented: {sorted(served - listed)}"
    assert listed - served == set(), f"documented but not served: {sorted(listed - served)}"
    assert len(listed) >= 60


async def test_every_operation_says_whether_it_needs_a_key(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security", document.get("security"))
            if path.startswith("/v1/"):
                assert security == [{"bearerAuth": []}], (method, path, security)
            else:
                assert security in (None, [], [{}]), (method, path, security)


async def test_nothing_answers_outside_the_inventory(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    for path in ("/v2/account", "/v1", "/v1/", "/admin", "/debug", "/v1/account/", "/internal/metrics", "/.env",
                 "/v1/campaigns/%2e%2e/account", "/server-status", "/actuator/health", "/console"):
        for method in HTTP_METHODS:
            answer = await api.request(method, path)
            if answer.status_code == 307:  # Starlette's trailing-slash redirect: to the documented path itself
                assert answer.headers["location"].endswith(path.rstrip("/")), (method, path, answer.headers)
                continue
            assert answer.status_code in (404, 405), (method, path, answer.status_code, answer.text[:200])
            if answer.status_code == 404:
                assert answer.json()["error"]["code"] == "not_found", (method, path)
    listed = documented(document)
    for path in document["paths"]:
        concrete = path.replace("{", "").replace("}", "")
        for method in HTTP_METHODS:
            # skip when this method is documented here, or on another template that takes the same path
            # (GET /v1/contacts/import is GET /v1/contacts/{contact_id} for a contact named "import")
            if any(verb == method and re.fullmatch(re.sub(r"{\w+}", "[^/]+", template), concrete)
                   for verb, template in listed):
                continue
            answer = await api.request(method, concrete)
            assert answer.status_code == 405, (method, path, answer.status_code)
            assert method not in answer.headers["allow"]
