"""OWASP API8:2023 Security Misconfiguration: a public ``serve``, error answers, response headers.

What an operator expects of ``serve`` on a public interface, and what this module holds it to:

- without ``CAMPAIGN_ENGINE_SECRET_KEY`` it refuses to start (exit 2, naming the variable), on
  every non-loopback spelling (``0.0.0.0``, ``::``, a LAN address, a host name): the key encrypts
  personal data and signs tracking links, and a generated or default one would not survive;
- with the key but without an https public URL it starts (TLS may end at a proxy in front) and
  says before listening that one-click unsubscribe is not offered over http;
- there is no debug mode to leave on: the app is built with ``debug=False`` and no answer, even an
  unexpected failure's 500, carries a traceback, a source path or an exception's text;
- no CORS header is sent (browsers on other origins cannot call the API with a user's key), and the
  recipients' endpoints (pixel, click, unsubscribe) answer with ``X-Content-Type-Options: nosniff``,
  ``no-store`` and ``no-referrer``, a forged click token's 404 included.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

import engine as engine_package
from engine import CampaignEngine, create_app
from engine.cli import app as cli
from tests.conftest import Api
from tests.security.conftest import Victim

TRACEBACK_SIGNS = re.compile(r"Traceback|File \"|\.py\b|/srv/|site-packages|sqlalchemy|aiosqlite|asyncpg|"
                             r"RuntimeError|KeyError|an unforeseen bug", re.IGNORECASE)
"""What would betray internals: a traceback, a source file or path, the database driver, an exception's name
or text. (A JSON parser's "line 1 column 2" is about the client's own body, and stays.)"""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "campaigns.example.com"])
def test_serve_on_a_public_host_refuses_to_start_without_the_secret_key(host: str, tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    result = CliRunner().invoke(cli, ["serve", "--host", host, "--port", "9", "--db",
                                      f"sqlite+aiosqlite:///{database}"], env={"CAMPAIGN_ENGINE_SECRET_KEY": ""})
    assert result.exit_code == 2, result.output
    assert "CAMPAIGN_ENGINE_SECRET_KEY" in result.output and "non-loopback" in result.output
    assert not database.exists()  # refused before opening anything


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_on_a_public_host_without_an_https_url_says_so_before_listening(tmp_path: Path) -> None:
    root = Path(engine_package.__file__).resolve().parents[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CAMPAIGN_ENGINE_")}
    environment.update({"CAMPAIGN_ENGINE_SECRET_KEY": "public-host-secret-0123456789abcdef", "COLUMNS": "200",
                        "PYTHONPATH": str(root)})
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                                "--db", f"sqlite+aiosqlite:///{tmp_path}/public.db"], cwd=root, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        output = "".join(lines)
        assert "Uvicorn running on" in output, output
        warning = next((line for line in lines if "public_url_not_https" in line), None)
        assert warning is not None, output
        assert "one-click" in warning and "http://" in warning
        # the laptop defaults a public host must not keep silently, each named with its setting
        assert "CAMPAIGN_ENGINE_PUBLIC_URL" in output and "127.0.0.1" in output, output
        assert "--no-private-webhooks" in output, output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.fixture
async def failing(engine: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus one route failing the way an unforeseen bug would."""
    app: FastAPI = create_app(engine, max_body_bytes=1024)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("an unforeseen bug in /srv/engine/secret_module.py line 12")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_no_error_answer_carries_internals(victim: Victim, failing: httpx.AsyncClient) -> None:
    app: FastAPI = failing._transport.app  # type: ignore[attr-defined]
    assert app.debug is False
    headers = {"Authorization": f"Bearer {victim.api.key}"}
    json_type = {**headers, "Content-Type": "application/json"}
    attempts = [
        ("GET", "/v1/boom", headers, None),
        ("GET", "/v1/account", {"Authorization": "Bearer nope"}, None),
        ("GET", "/v1/no-such-route", headers, None),
        ("TRACE", "/v1/contacts", headers, None),
        ("POST", "/v1/contacts", json_type, b"{broken"),
        ("POST", "/v1/contacts", json_type, b'{"email": "x@y.io", "custom_fields": {"n": 1e999}}'),
        ("POST", "/v1/contacts", json_type, b"[" * 5000 + b"]" * 5000),
        ("POST", "/v1/contacts", json_type, b'{"email": "' + b"a" * 2000 + b'"}'),
        ("POST", "/v1/contacts", {**headers, "Content-Type": "text/plain"}, b"email=x"),
        ("POST", "/v1/contacts", json_type, b'{"email": "\\ud800@x.io"}'),
        ("GET", "/v1/contacts?page=99999999999999999999999", headers, None),
        ("GET", "/v1/campaigns?sort=__class__", headers, None),
        ("GET", f"/v1/campaigns/{victim.ids['campaign_id']}/activity?from=not-a-date", headers, None),
        ("GET", "/t/c/%00%ff", {}, None),
        ("POST", "/v1/contacts/import", {**headers, "Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\n"),
        ("POST", "/v1/contacts/import", {**headers, "Content-Type": "text/csv"}, b"\xff\xfe\x00bad"),
    ]
    for method, path, sent_headers, body in attempts:
        answer = await failing.request(method, path, headers=sent_headers, content=body)
        assert answer.status_code >= 400, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/json"), (path, answer.headers)
        error = answer.json()["error"]
        assert error["code"] and error["message"], (path, answer.text)
        leaked = TRACEBACK_SIGNS.search(answer.text)
        assert leaked is None, f"{method} {path}: {leaked.group(0) if leaked else ''!r} in {answer.text[:300]}"
    crashed = await failing.get("/v1/boom", headers=headers)
    assert crashed.status_code == 500 and crashed.json()["error"]["code"] == "internal_error"


async def test_no_cors_header_is_offered_to_other_origins(api: Api) -> None:
    origin = {"Origin": "https://evil.example.net"}
    answer = await api.get("/v1/account", headers=origin)
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    preflight = await api.client.options("/v1/account", headers={**origin, "Access-Control-Request-Method": "GET",
                                                                 "Access-Control-Request-Headers": "authorization"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-credentials" not in preflight.headers


async def test_json_answers_are_never_sniffed(api: Api) -> None:
    for path, headers in (("/v1/account", api.headers), ("/v1/account", {}), ("/v1/nope", api.headers),
                          ("/healthz", {}), ("/openapi.json", {})):
        answer = await api.client.get(path, headers=headers)
        assert answer.headers.get("x-content-type-options") == "nosniff", (path, dict(answer.headers))
    pixel = await api.client.get("/t/o/forged.token")  # its own header is kept, not doubled
    assert pixel.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_recipients_endpoints_send_the_security_headers(api: Api) -> None:
    """Forged tokens reach the same code paths as real ones up to the signature check; the real
    pixel, click and page headers are checked in tests/security/test_api10_unsafe_consumption.py."""
    for method, path in (("GET", "/t/o/forged.token"), ("GET", "/t/c/forged.token"), ("HEAD", "/t/c/forged.token"),
                         ("GET", "/u/forged.token"), ("POST", "/u/forged.token")):
        answer = await api.client.request(method, path)
        assert answer.status_code in (200, 404), (method, path, answer.status_code)
        assert answer.headers.get("x-content-type-options") == "nosniff", (method, path, dict(answer.headers))
        assert "no-store" in answer.headers.get("cache-control", ""), (method, path)
        assert answer.headers.get("referrer-policy") == "no-referrer", (method, path)
