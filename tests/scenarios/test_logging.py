"""Logging as an operator and an embedding program see it: real processes, their real stdout and stderr.

- ``serve`` (not on a terminal) writes JSON lines: an API call's engine lines and uvicorn's access
  line parse and carry the call's ``X-Request-Id``;
- ``--log-format console`` / ``$CAMPAIGN_ENGINE_LOG_FORMAT`` / ``--log-level`` choose the renderer
  and the level of any command;
- context bound with structlog's contextvars (how tick and delivery lines name workspace, campaign
  and sender) is on the line;
- a program embedding the engine prints nothing unless it configures logging itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "engine.cli"]


def environment(**changes: str) -> dict[str, str]:
    """The test's environment without the variables that would choose for the command under test."""
    base = {key: value for key, value in os.environ.items()
            if key not in ("CAMPAIGN_ENGINE_LOG_FORMAT", "CAMPAIGN_ENGINE_LOG_LEVEL", "CAMPAIGN_ENGINE_DB",
                           "CAMPAIGN_ENGINE_SECRET_KEY", "COLUMNS")}
    return {**base, "PYTHONPATH": str(ROOT), **changes}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object (serve's stdout lines are for people, not JSON)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_logs_json_lines_with_the_request_id_of_each_api_call(tmp_path: Path) -> None:
    """Given serve on a fresh database, asked for JSON lines,
    when one API call generates a sender's DKIM key (the engine logs ``sender_dkim_key_set``),
    then that line and uvicorn's access line for the call are JSON with the call's request id."""
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--db", f"sqlite+aiosqlite:///{tmp_path}/serve.db", "--port", str(port),
                             "--log-format", "json", "--log-level", "info"],  # serve's own options
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        assert proc.stdout is not None and proc.stderr is not None
        key = None
        for line in proc.stdout:  # the key first, then the docs line
            if found := re.fullmatch(r"\s*(ce_[\w-]+)\s*", line):
                key = found.group(1)
            if "Interactive docs" in line:
                break
        startup = []
        for line in proc.stderr:
            startup.append(line)
            if "Uvicorn running on" in line:
                break
        assert key, "serve printed no API key"
        assert all(json.loads(line)["timestamp"] for line in startup)  # uvicorn's startup lines too
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            sender = client.post("/v1/senders", json={"email": "ops@example.com", "smtp": {
                "host": "127.0.0.1", "port": 2525, "security": "none"}, "daily_limit": 50})
            assert sender.status_code == 201, sender.text
            answer = client.post(f"/v1/senders/{sender.json()['id']}/dkim", json={"algorithm": "ed25519-sha256"})
            assert answer.status_code == 200, answer.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    request_id = answer.headers["x-request-id"]
    lines = json_lines("".join(startup) + rest)
    caused = [line for line in lines if line.get("request_id") == request_id]
    assert {line["event"] for line in caused} == {"sender_dkim_key_set", "http_request"}, caused
    access = next(line for line in caused if line["event"] == "http_request")
    assert (access["logger"], access["method"], access["status"]) == ("uvicorn.access", "POST", 200)
    assert access["path"] == f"/v1/senders/{sender.json()['id']}/dkim"
    dkim_line = next(line for line in caused if line["event"] == "sender_dkim_key_set")
    assert (dkim_line["logger"], dkim_line["level"]) == ("campaign_engine", "info")
    other_call = [line for line in lines if line.get("request_id") == sender.headers["x-request-id"]]
    assert [line["event"] for line in other_call] == ["http_request"]  # one id per call, never shared


def test_log_format_and_level_are_chosen_by_option_or_environment(tmp_path: Path) -> None:
    """A one-shot command logs from warning (its output is the result); asked for info, it shows
    the fresh database's ``projections_rebuilt`` on stderr only: JSON lines when stderr is not a
    terminal, console lines when asked, JSON when the environment says so."""
    quiet = subprocess.run([*CLI, "workspace", "list", "--db", f"sqlite+aiosqlite:///{tmp_path}/a.db"],
                           capture_output=True, text=True, timeout=60, env=environment())
    assert quiet.returncode == 0 and quiet.stderr == ""

    default = subprocess.run([*CLI, "--log-level", "info", "workspace", "list", "--db",
                              f"sqlite+aiosqlite:///{tmp_path}/d.db"],
                             capture_output=True, text=True, timeout=60, env=environment())
    assert default.returncode == 0, default.stderr  # stderr is a pipe, not a terminal: JSON lines
    assert [line["event"] for line in json_lines(default.stderr)] == ["projections_rebuilt"]
    assert len(default.stderr.splitlines()) == 1

    console = subprocess.run([*CLI, "--log-format", "console", "--log-level", "info", "workspace", "list", "--db",
                              f"sqlite+aiosqlite:///{tmp_path}/b.db"],
                             capture_output=True, text=True, timeout=60, env=environment())
    assert console.returncode == 0, console.stderr
    line = next(line for line in console.stderr.splitlines() if "projections_rebuilt" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z \[info\s*\] projections_rebuilt\s+\[campaign_engine\]", line), line
    assert "projections_rebuilt" not in console.stdout

    from_environment = subprocess.run([*CLI, "workspace", "list", "--db", f"sqlite+aiosqlite:///{tmp_path}/c.db"],
                                      capture_output=True, text=True, timeout=60,
                                      env=environment(CAMPAIGN_ENGINE_LOG_FORMAT="json",
                                                      CAMPAIGN_ENGINE_LOG_LEVEL="info"))
    assert from_environment.returncode == 0, from_environment.stderr
    events = [line["event"] for line in json_lines(from_environment.stderr)]
    assert "projections_rebuilt" in events

    refused = subprocess.run([*CLI, "--log-format", "xml", "workspace", "list"], capture_output=True, text=True,
                             timeout=60, env=environment())
    assert refused.returncode == 2 and "xml" in refused.stderr


def test_lines_carry_the_context_bound_around_them() -> None:
    """Given logging configured for JSON, when code binds workspace, campaign and sender ids with
    structlog's contextvars (as a tick or a delivery does), then the engine's line inside carries
    them, and so does a plain ``logging`` record logged in the same block; outside, neither."""
    program = textwrap.dedent("""
        import logging
        import structlog
        from engine.logging_setup import configure_logging

        configure_logging("json", "info")
        log = structlog.get_logger("campaign_engine.sending")
        with structlog.contextvars.bound_contextvars(workspace_id="ws_1", campaign_id="cmp_2", sender_id="snd_3"):
            log.info("email_sent", email_id="eml_4")
            logging.getLogger("aiosmtplib").warning("plain %s record", "library")
        log.info("tick", sent=0)
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            env=environment())
    assert result.returncode == 0 and result.stdout == "", result.stderr
    sent, plain, tick = json_lines(result.stderr)
    ids = {"workspace_id": "ws_1", "campaign_id": "cmp_2", "sender_id": "snd_3"}
    assert sent == {**sent, **ids, "event": "email_sent", "email_id": "eml_4", "logger": "campaign_engine.sending"}
    assert plain == {**plain, **ids, "event": "plain library record", "logger": "aiosmtplib", "level": "warning"}
    assert not ids.keys() & tick.keys()


EMBEDDING = textwrap.dedent("""
    import asyncio
    import logging
    import sys
    from datetime import UTC, datetime

    from engine import CampaignEngine, ManualClock

    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    async def main() -> None:
        clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
        async with CampaignEngine(sys.argv[2], clock=clock, secret_key="k" * 32) as engine:
            await engine.create_workspace("embedded")
            await engine.tick()

    asyncio.run(main())
""")


def embed(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", EMBEDDING, mode, f"sqlite+aiosqlite:///{tmp_path}/{mode}.db"],
                          capture_output=True, text=True, timeout=60, env=environment())


def test_an_embedding_program_sees_no_output_unless_it_configures_logging(tmp_path: Path) -> None:
    """Given a program that embeds the engine on a fresh database (which logs ``projections_rebuilt``),
    when it configures nothing, then nothing is printed; when it calls ``logging.basicConfig``, the
    engine's lines reach it through the standard library."""
    silent = embed(tmp_path, "silent")
    assert silent.returncode == 0, silent.stderr
    assert (silent.stdout, silent.stderr) == ("", "")
    configured = embed(tmp_path, "configured")
    assert configured.returncode == 0, configured.stderr
    assert "INFO campaign_engine projections_rebuilt" in configured.stderr and configured.stdout == ""

