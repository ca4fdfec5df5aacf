"""A database made by older code gets the read models' new indexes when the engine opens it.

Given a database whose send queue lacks an index that later code reads through; when an engine
opens it; then the index exists (``create_all`` alone would leave the old table as it was).
"""

from __future__ import annotations

import sqlite3

from engine import CampaignEngine
from tests.conftest import SECRET


def indexes(path: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


async def test_missing_index_is_created_on_open(tmp_path: object) -> None:
    path = f"{tmp_path}/old.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with CampaignEngine(url, secret_key=SECRET):
        pass
    assert "ix_rm_emails_queue" in indexes(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX ix_rm_emails_queue")
    assert "ix_rm_emails_queue" not in indexes(path)
    async with CampaignEngine(url, secret_key=SECRET):
        pass
    assert "ix_rm_emails_queue" in indexes(path)
