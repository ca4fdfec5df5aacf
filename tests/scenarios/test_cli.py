"""The CLI: demo, forecast, workspace create, and serve's refusal to expose itself unkeyed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from typer.testing import CliRunner

from engine import CampaignEngine
from engine.cli import app

runner = CliRunner()


def test_demo_runs_three_steps_with_variants_a_holiday_and_inbound_mail() -> None:
    """Given nothing, when ``demo`` runs, then its three steps went out (none on the holiday), its
    forecast matched, and its results table counts the simulated opens, replies and bounce per variant."""
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "forecast matched every day: True" in out
    sent = int(re.search(r"captured (\d+) emails", out).group(1))  # type: ignore[union-attr]
    assert sent >= 100
    holiday = re.search(r"2026-05-01 Fri \(holiday\)\s*│\s*(\d+)\s*│\s*(\d+)", out)
    assert holiday is not None and holiday.groups() == ("0", "0")  # forecast 0, sent 0 on 1 May
    assert "Results per step and variant" in out
    row = r"│\s*{step}\s*│\s*{variant}\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│"
    steps = {n: [int(v) for v in re.search(row.format(step=f"step {n}", variant="all"), out).groups()]  # type: ignore[union-attr]
             for n in (1, 2, 3)}
    variants = {v: [int(c) for c in re.search(row.format(step="", variant=v), out).groups()]  # type: ignore[union-attr]
                for v in ("A", "B")}
    assert all(counts[0] > 0 for counts in steps.values())  # sent: every step went out
    assert sum(steps[n][0] for n in steps) == sent
    assert [variants["A"][i] + variants["B"][i] for i in range(4)] == steps[1]  # the variants add up to step 1
    assert variants["A"][0] > 0 and variants["B"][0] > 0
    _, opened, replied, bounced = steps[1]
    assert opened > 0 and replied == 2 and bounced == 1
    assert steps[2][0] == steps[1][0] - replied - bounced  # the replies and the bounce stopped their sequences


def test_serve_refuses_public_host_without_secret(monkeypatch: object) -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"], env={"CAMPAIGN_ENGINE_SECRET_KEY": ""})
    assert result.exit_code == 2 and "Refusing" in result.output


def test_workspace_create_and_forecast(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    result = runner.invoke(app, ["workspace", "create", "ops", "--db", db, "--monthly-limit", "500"])
    assert result.exit_code == 0 and "api key: ce_" in result.output

    async def prepare() -> str:
        async with CampaignEngine(db) as e:
            ws = (await e.create_workspace("w")).id
            sid = (await e.create_sender(ws, {"email": "r@s.io", "smtp": {"host": "127.0.0.1", "port": 9,
                                                                          "security": "none"}}))["id"]
            cmp = await e.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "schedule": {"every_minutes": 60}})
            con = (await e.create_contact(ws, {"email": "a@corp.io"}))["id"]
            await e.enroll(ws, cmp["id"], {"contact_ids": [con]})
            await e.launch_campaign(ws, cmp["id"])
            return str(cmp["id"])

    cid = asyncio.run(prepare())
    result = runner.invoke(app, ["forecast", cid, "--db", db, "--days", "14"])
    assert result.exit_code == 0, result.output
    assert "total: 1" in result.output and "█" in result.output
    assert runner.invoke(app, ["forecast", "cmp_nope", "--db", db]).exit_code == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_and_create_webhook(db: str, *flags: str, env: dict[str, str] | None = None) -> int:
    """Start ``campaign-engine serve`` for real, create a webhook to a loopback IP, return the status."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--db", db, "--port", str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    try:
        assert proc.stdout is not None
        key = None
        for line in proc.stdout:  # the key (first start only), then uvicorn's line once it listens
            if key is None and (found := re.fullmatch(r"\s*(ce_[\w-]+)\s*", line)):  # the key's own line
                key = found.group(1)
            if "Uvicorn running on" in line:
                break
        assert key, "serve printed no API key"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
            r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["email.sent"]})
            return r.status_code
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_serve_webhook_address_rule_from_flag_and_environment(tmp_path: Path) -> None:
    """``--no-private-webhooks`` (or its environment variable) reaches the engine: a webhook to a
    loopback address is refused at creation; the default accepts it."""
    assert _serve_and_create_webhook(f"sqlite+aiosqlite:///{tmp_path}/a.db", "--no-private-webhooks") == 422
    assert _serve_and_create_webhook(f"sqlite+aiosqlite:///{tmp_path}/b.db",
                                     env={"CAMPAIGN_ENGINE_PRIVATE_WEBHOOKS": "false"}) == 422
    assert _serve_and_create_webhook(f"sqlite+aiosqlite:///{tmp_path}/c.db") == 201
