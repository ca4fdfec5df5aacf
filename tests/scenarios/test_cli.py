"""The CLI: demo, forecast, workspace create, and serve's refusal to expose itself unkeyed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from typer.testing import CliRunner

from engine import CampaignEngine
from engine.cli import app

runner = CliRunner()


def test_demo_runs_a_week_and_matches_its_forecast() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "forecast matched every day: True" in result.output
    sent = int(re.search(r"captured (\d+) emails", result.output).group(1))  # type: ignore[union-attr]
    assert sent >= 100


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
