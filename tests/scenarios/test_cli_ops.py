"""The CLI for operators: --version, one-line errors with exit codes, API keys, pipes, serve's probes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from engine import CampaignEngine
from engine.cli import app

runner = CliRunner()
CLI = [sys.executable, "-m", "engine.cli"]


def db_of(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/cli.db"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command in a child process: what a user sees on a terminal's stdout and stderr."""
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "CAMPAIGN_ENGINE_SECRET_KEY")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**environment, **(env or {})})


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error, which must be a single ``error:`` line on stderr and no traceback."""
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and re.fullmatch(r"campaign-engine \d+\.\d+\.\d+\S*\n", result.output)


def test_validation_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    db = db_of(tmp_path)
    result = cli("workspace", "create", "", "--db", db)
    assert result.returncode == 2 and "name must be 1-255 characters" in one_error_line(result)
    result = cli("workspace", "create", "acme", "--monthly-limit", "-5", "--db", db)
    assert result.returncode == 2 and "monthly_limit: must be >= 0" in one_error_line(result)
    assert cli("workspace", "create", "acme", "--db", db).returncode == 0
    result = cli("workspace", "create", "ACME", "--db", db)  # names are unique, whatever the case
    assert result.returncode == 2 and "a workspace named 'acme' already exists" in one_error_line(result)

    async def campaign() -> str:
        async with CampaignEngine(db) as engine:
            ws = await engine.find_workspace("acme")
            return str((await engine.create_campaign(ws, {"name": "c"}))["id"])

    cid = asyncio.run(campaign())
    result = cli("forecast", cid, "--days", "0", "--db", db)
    assert result.returncode == 2 and "days must be between 1 and 90" in one_error_line(result)
    result = cli("forecast", "cmp_nope", "--db", db)
    assert result.returncode == 1 and "campaign cmp_nope not found" in one_error_line(result)


def test_unreachable_database_and_bad_secret_are_one_line() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("workspace", "create", "x", "--db", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/db")
    assert result.returncode == 2 and "cannot use the database" in one_error_line(result)
    result = cli("workspace", "list", env={"CAMPAIGN_ENGINE_SECRET_KEY": "short"})
    assert result.returncode == 2 and "at least 16 bytes" in one_error_line(result)


@pytest.mark.postgres
def test_missing_postgresql_database_is_one_line() -> None:
    from tests.conftest import PG_DSN

    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    result = cli("serve", "--db", f"{base}/ce_no_such_database", "--port", "1")
    assert result.returncode == 2
    assert 'database "ce_no_such_database" does not exist' in one_error_line(result)


def test_api_keys_from_the_command_line(tmp_path: Path) -> None:
    db = db_of(tmp_path)
    result = runner.invoke(app, ["workspace", "keys", "list", "--db", db])
    assert result.exit_code == 2 and "no workspace yet" in result.output
    first_key = re.search(r"api key: (ce_\S+)", runner.invoke(app, ["workspace", "create", "acme", "--db", db]
                                                              ).output).group(1)  # type: ignore[union-attr]

    result = runner.invoke(app, ["workspace", "keys", "create", "--name", "laptop", "--db", db])
    assert result.exit_code == 0, result.output
    key = re.search(r"^\s+(ce_\S+)$", result.output, re.MULTILINE).group(1)  # type: ignore[union-attr]
    listed = json.loads(runner.invoke(app, ["workspace", "keys", "list", "--json", "--db", db]).output)
    assert [(k["name"], k["prefix"]) for k in listed] == [("initial", first_key[:8]), ("laptop", key[:8])]
    table = runner.invoke(app, ["workspace", "keys", "list", "-w", "ACME", "--db", db]).output
    assert "laptop" in table and key[:8] in table and key not in table and "never" in table

    result = runner.invoke(app, ["workspace", "keys", "revoke", listed[0]["id"], "--db", db])
    assert result.exit_code == 0 and "revoked" in result.output
    result = runner.invoke(app, ["workspace", "keys", "revoke", listed[1]["id"], "--db", db])
    assert result.exit_code == 2 and "last API key" in result.output
    result = runner.invoke(app, ["workspace", "keys", "revoke", listed[0]["id"], "--db", db])
    assert result.exit_code == 1 and "not found" in result.output

    async def check() -> None:
        async with CampaignEngine(db) as engine:
            assert await engine.authenticate(first_key) is None
            assert await engine.authenticate(key) is not None
            ws = await engine.find_workspace("acme")
            actors = [e.metadata.get("actor") for e in await engine.store.read_stream(f"workspace-{ws}")]
            assert actors == ["cli", "cli", "cli", "cli"]

    asyncio.run(check())

    assert runner.invoke(app, ["workspace", "create", "other", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["workspace", "keys", "list", "--db", db])
    assert result.exit_code == 2 and "--workspace" in result.output
    assert runner.invoke(app, ["workspace", "keys", "list", "-w", "other", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["workspace", "keys", "list", "-w", "nope", "--db", db])
    assert result.exit_code == 1 and "workspace nope not found" in result.output
    listing = json.loads(runner.invoke(app, ["workspace", "list", "--json", "--db", db]).output)
    assert [(w["name"], w["api_keys"]) for w in listing] == [("acme", 1), ("other", 1)]


def test_broken_pipe_ends_quietly(tmp_path: Path) -> None:
    db = db_of(tmp_path)

    async def fill() -> None:  # well over a pipe's buffer of JSON lines
        async with CampaignEngine(db) as engine:
            ws = (await engine.create_workspace("big")).id
            await engine.import_contacts(ws, [{"email": f"person{n}@corp{n}.io", "first_name": "A" * 40}
                                              for n in range(1500)])

    asyncio.run(fill())
    proc = subprocess.Popen([*CLI, "events", "export", "--db", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # like `| head -3`
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and stderr == ""
    assert all(json.loads(line)["position"] for line in lines)


def test_piped_tables_are_not_cut(tmp_path: Path) -> None:
    db = db_of(tmp_path)
    name = "A workspace with a name far longer than eighty columns, so that a cut table would show an ellipsis"
    assert cli("workspace", "create", name, "--db", db).returncode == 0
    result = cli("workspace", "list", "--db", db)
    assert result.returncode == 0 and name in result.stdout and "…" not in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_explains_keys_and_answers_probes(tmp_path: Path) -> None:
    db = db_of(tmp_path)
    assert runner.invoke(app, ["workspace", "create", "default", "--db", db]).exit_code == 0
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.Popen([*CLI, "serve", "--db", db, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Uvicorn running on" in line:
                break
        printed = "".join(seen)
        assert "API keys are shown only when created" in printed
        assert f"campaign-engine workspace keys create --workspace default --name NAME --db {db}" in printed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/healthz").status_code == 200
            for _ in range(200):  # the loop starts beside the server: ready once it ticked
                ready = client.get("/readyz")
                if ready.status_code == 200:
                    break
                time.sleep(0.05)
            assert ready.status_code == 200 and ready.json()["runtime"] == "ticking", ready.text
            body = client.get("/metrics").text
            assert "campaign_engine_runtime_lag_seconds 0.0" in body
            assert 'campaign_engine_api_requests_total{method="GET",route="/readyz",status="200"}' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
