"""CLI `contacts import FILE`: the REST import's rules for a file on disk, in chunks, with a list."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from engine import CampaignEngine
from engine import cli as cli_module
from engine.cli import app

runner = CliRunner()


def _prepare(db: str) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        async with CampaignEngine(db) as engine:
            ws = (await engine.create_workspace("acme")).id
            await engine.create_workspace("rival")
            lst = await engine.create_list(ws, {"name": "Leads"})
            await engine.create_contact(ws, {"email": "old@a.io"})
            return ws, str(lst["id"])

    return asyncio.run(run())


def _contacts(db: str, ws: str, list_id: str | None = None) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with CampaignEngine(db) as engine:
            return list((await engine.list_contacts(ws, list_id=list_id, per_page=200))["data"])

    return asyncio.run(run())


def test_import_semicolon_file_into_a_list_in_chunks(tmp_path: Path, monkeypatch: Any) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    ws, list_id = _prepare(db)
    monkeypatch.setattr(cli_module, "IMPORT_CHUNK", 2)  # several chunks: row numbers stay the file's
    lines = ["\ufeffE-mail;First Name;Company Name;Plan", "old@a.io;Olga;Acme;pro", "new@a.io;Ned;;free",
             "broken;X;;", "last@a.io;Lia;Corp;"]
    path = tmp_path / "leads.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["contacts", "import", str(path), "--db", db, "--workspace", "acme",
                                 "--list-id", list_id])
    assert result.exit_code == 0, result.output
    assert "created 2, updated 1, invalid 1; 3 on list" in result.output
    assert "row 3: email" in result.output
    people = {c["email"]: c for c in _contacts(db, ws)}
    assert (people["old@a.io"]["first_name"], people["old@a.io"]["company"]) == ("Olga", "Acme")
    assert people["new@a.io"]["custom_fields"] == {"plan": "free"}
    assert sorted(c["email"] for c in _contacts(db, ws, list_id)) == ["last@a.io", "new@a.io", "old@a.io"]


def test_import_refusals_exit_non_zero_and_write_nothing(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    ws, _ = _prepare(db)
    path = tmp_path / "x.csv"
    path.write_text("Email\tName\nzed@z.io\tZed\n", encoding="utf-8")
    result = runner.invoke(app, ["contacts", "import", str(path), "--db", db, "-w", "acme", "--list-id", "lst_nope"])
    assert result.exit_code == 1 and "list lst_nope not found" in result.output
    result = runner.invoke(app, ["contacts", "import", str(path), "--db", db])  # two workspaces: name one
    assert result.exit_code == 2 and "--workspace" in result.output
    path.write_text("Name\nZed\n", encoding="utf-8")
    result = runner.invoke(app, ["contacts", "import", str(path), "--db", db, "-w", "acme"])
    assert result.exit_code == 2 and "email column" in result.output
    result = runner.invoke(app, ["contacts", "import", str(path), "--db", db, "-w", "acme", "--map", "Name=email"])
    assert result.exit_code == 0 and "invalid 1" in result.output
    assert [c["email"] for c in _contacts(db, ws)] == ["old@a.io"]
