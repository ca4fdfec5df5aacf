"""OWASP API2:2023 Broken Authentication: no valid key, no access; keys are stored only as hashes.

Given a workspace with objects; when any /v1 route (every method the app serves, aimed at real ids)
is called with no key, another scheme, an empty or malformed bearer, a key one character off, the
key in another case, or a revoked key; then each answer is 401 with the error envelope
(``unauthorized``) and ``WWW-Authenticate: Bearer`` (RFC 9110 requires the challenge on a 401, RFC
6750 names the scheme), decided before the body is read or the id looked up, and nothing is appended.
And given keys created through the API (with and without ``Idempotency-Key``); then no byte of any
plaintext key is in the database files: only hashes and the 8-character display prefix are stored.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from engine import CampaignEngine, create_app
from tests.conftest import Api
from tests.security.conftest import DOCS_PATHS, Victim, last_position, served_operations

PUBLIC_PREFIXES = ("/t/", "/u/", "/healthz", "/readyz", "/metrics", *DOCS_PATHS)
"""Routes that need no key by design: recipients' links, probes, the documentation."""


@pytest.fixture
async def unthrottled(engine: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app without the per-client limit on failed keys (tested in tests/api/test_key_guessing.py),
    so that hundreds of refused keys from one test client all reach the key check."""
    app = create_app(engine, max_body_bytes=64 * 1024, failed_keys_per_minute=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def keyed_operations(app: FastAPI) -> list[tuple[str, str]]:
    found = sorted({(method, path) for method, path in served_operations(app)
                    if method not in ("HEAD", "*") and not path.startswith(PUBLIC_PREFIXES)})
    assert len(found) >= 50 and all(path.startswith("/v1/") for _, path in found), found
    return found


def one_char_off(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


async def test_every_keyed_route_refuses_missing_malformed_and_revoked_keys(
        engine: CampaignEngine, victim: Victim, unthrottled: httpx.AsyncClient) -> None:
    api = victim.api
    spare = (await api.post("/v1/api_keys", json={"name": "to revoke"})).json()
    assert (await api.delete(f"/v1/api_keys/{spare['id']}")).status_code == 200
    credentials: dict[str, dict[str, str]] = {
        "no header": {},
        "basic scheme": {"Authorization": f"Basic {api.key}"},
        "bearer without key": {"Authorization": "Bearer "},
        "bearer garbage": {"Authorization": "Bearer \x7f;DROP TABLE api_keys;--"},
        "key one char off": {"Authorization": f"Bearer {one_char_off(api.key)}"},
        "key upper-cased": {"Authorization": f"Bearer {api.key.upper()}"},
        "key prefix only": {"Authorization": f"Bearer {api.key[:8]}"},
        "revoked key": {"Authorization": f"Bearer {spare['key']}"},
        "key as a query parameter": {},
    }
    before = await last_position(engine)
    app: FastAPI = unthrottled._transport.app  # type: ignore[attr-defined]
    failures = []
    for method, template in keyed_operations(app):
        path = template.format_map(victim.ids)
        for name, headers in credentials.items():
            target = f"{path}?api_key={api.key}" if name == "key as a query parameter" else path
            # a body that is not even JSON: authentication must refuse before anything reads it
            answer = await unthrottled.request(method, target, headers={**headers, "Content-Type": "application/json"},
                                               content=b"{not json")
            error = answer.json().get("error", {}) if answer.headers.get("content-type", "").startswith(
                "application/json") else {}
            if answer.status_code != 401 or error.get("code") != "unauthorized" or not error.get("message") \
                    or answer.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{method} {template} with {name}: {answer.status_code} {answer.text[:120]}")
            assert victim.markers[0] not in answer.text
    assert not failures, "\n".join(failures)
    assert await last_position(engine) == before
    assert (await api.get("/v1/account")).status_code == 200  # the real key still works


def database_bytes(sqlite_url: str) -> bytes:
    """The SQLite database's main file, write-ahead log and shared memory file, as stored on disk."""
    main = Path(sqlite_url.split("///", 1)[1])
    return b"".join(path.read_bytes() for path in (main, Path(f"{main}-wal"), Path(f"{main}-shm")) if path.exists())


async def test_keys_are_stored_hashed_never_in_plaintext(engine: CampaignEngine, sqlite_url: str, api: Api) -> None:
    keys = [api.key]
    created = await api.post("/v1/api_keys", json={"name": "plain"})
    replayed_first = await api.post("/v1/api_keys", json={"name": "idem"}, headers={"Idempotency-Key": "k-1"})
    replayed = await api.post("/v1/api_keys", json={"name": "idem"}, headers={"Idempotency-Key": "k-1"})
    assert created.status_code == replayed_first.status_code == 201
    keys += [created.json()["key"], replayed_first.json()["key"]]
    assert replayed.json()["key"] is None  # a replay cannot show it again: only its hash was kept
    for key in keys:
        assert re.fullmatch(r"ce_[A-Za-z0-9_-]{40,}", key), key
        assert (await Api(api.client, api.ws_id, key).get("/v1/account")).status_code == 200
    stored = database_bytes(sqlite_url)
    assert len(stored) > 10_000
    for key in keys:
        secret_part = key[8:]  # everything beyond the display prefix that the key list shows
        assert secret_part.encode() not in stored, "a plaintext API key is in the database files"
    listed = (await api.get("/v1/api_keys")).json()
    assert {entry["prefix"] for entry in listed} == {key[:8] for key in keys}
    events = (await api.get("/v1/events?limit=1000")).text
    assert not any(key[8:] in events for key in keys)
