"""The database's key check: a wrong secret key is refused at open, before it can touch the log.

A worker once started with the wrong key appended ``email.claimed`` chained under that key and
then failed every second; ``audit verify`` reported the stream as tampered with. Now the database
records an HMAC of a fixed label under a key derived from its secret key when it is created, and
``CampaignEngine.open`` (so ``serve``, ``worker`` and every CLI command) compares it first.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from engine import CampaignEngine
from engine.errors import EngineError, SecretKeyMismatch
from events.vault import Vault
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink
from tests.scale.helpers import ROOT, audit_verify, build, cli, cli_env

WRONG = "a-wrong-secret-key-fedcba9876543210"


async def log_facts(url: str) -> tuple[int, int, str | None]:
    """(event count, last position, recorded check value), read with plain SQL: no engine opens."""
    probe = create_async_engine(url)
    try:
        async with probe.connect() as conn:
            count, last = (await conn.execute(text("SELECT count(*), coalesce(max(position), 0) FROM events"))).one()
            check = (await conn.execute(text("SELECT check_value FROM key_check WHERE id = 1"))).scalar()
    finally:
        await probe.dispose()
    return int(count), int(last), check


async def forget_check_value(url: str) -> None:
    """Make the database look like one created before key checks existed."""
    probe = create_async_engine(url)
    try:
        async with probe.begin() as conn:
            await conn.execute(text("DELETE FROM key_check"))
    finally:
        await probe.dispose()


async def test_a_new_database_records_its_key_and_opens_again_under_it(db_url: str) -> None:
    async with CampaignEngine(db_url, secret_key=SECRET) as eng:
        await eng.create_workspace("w")
    assert (await log_facts(db_url))[2] == Vault(SECRET.encode()).key_check_value()
    async with CampaignEngine(db_url, secret_key=SECRET) as eng:
        assert len(await eng.list_workspaces()) == 1


async def test_the_engine_refuses_another_keys_database_before_writing(db_url: str) -> None:
    async with CampaignEngine(db_url, secret_key=SECRET) as eng:
        ws = await eng.create_workspace("w")
        await eng.create_contact(ws.id, {"email": "ada@example.com"})
    before = await log_facts(db_url)

    with pytest.raises(SecretKeyMismatch) as caught:
        await CampaignEngine(db_url, secret_key=WRONG).open()
    assert isinstance(caught.value, EngineError)
    assert caught.value.code == "secret_key_mismatch"
    assert "CAMPAIGN_ENGINE_SECRET_KEY" in caught.value.message
    assert WRONG not in caught.value.message and SECRET not in caught.value.message
    assert await log_facts(db_url) == before


@pytest.mark.parametrize("with_contact", [True, False], ids=["proved-by-a-subject-key", "proved-by-the-chain"])
async def test_a_database_from_before_key_checks_gets_a_value_only_from_the_right_key(
        db_url: str, with_contact: bool) -> None:
    async with CampaignEngine(db_url, secret_key=SECRET) as eng:
        ws = await eng.create_workspace("w")
        if with_contact:
            await eng.create_contact(ws.id, {"email": "ada@example.com"})
    await forget_check_value(db_url)
    count, last, _ = await log_facts(db_url)

    # The first open after the upgrade is the wrong key: refused, and nothing recorded that would
    # lock the right key out.
    with pytest.raises(SecretKeyMismatch):
        await CampaignEngine(db_url, secret_key=WRONG).open()
    assert await log_facts(db_url) == (count, last, None)

    async with CampaignEngine(db_url, secret_key=SECRET) as eng:
        assert len(await eng.list_workspaces()) == 1
    assert (await log_facts(db_url))[2] == Vault(SECRET.encode()).key_check_value()
    with pytest.raises(SecretKeyMismatch):
        await CampaignEngine(db_url, secret_key=WRONG).open()


async def test_a_worker_with_the_wrong_key_exits_at_once_and_leaves_the_log_untouched(
        db_url: str, tmp_path: Path) -> None:
    with SmtpSink() as sink:
        # Real time: the worker runs the system clock, and the campaign's email is due now, so a
        # worker that did not check its key would claim it (appending under the wrong chain key).
        async with CampaignEngine(db_url, secret_key=SECRET) as eng:
            await build(eng, sink.host, sink.port, contacts=1, senders=1, campaigns=1)
        before = await log_facts(db_url)

        env = {**cli_env(), "CAMPAIGN_ENGINE_SECRET_KEY": WRONG}
        started = time.monotonic()
        worker = subprocess.run([*cli(), "worker", "--db", db_url, "--safety-seconds", "1"], capture_output=True,
                                text=True, env=env, cwd=str(ROOT), timeout=60, check=False)
        elapsed = time.monotonic() - started

        assert worker.returncode == 2, (worker.stdout, worker.stderr)
        assert elapsed < 30
        lines = worker.stderr.strip().splitlines()
        assert len(lines) == 1 and "CAMPAIGN_ENGINE_SECRET_KEY" in lines[0], worker.stderr
        assert "Traceback" not in worker.stdout + worker.stderr
        assert await log_facts(db_url) == before
        assert sink.messages == []

        verified = audit_verify(db_url)
        assert verified.returncode == 0, (verified.stdout, verified.stderr)
        # with the wrong key, audit verify names the configuration problem instead of "tampered"
        wrong = subprocess.run([*cli(), "audit", "verify", "--db", db_url], capture_output=True, text=True,
                               env=env, cwd=str(ROOT), timeout=120, check=False)
        assert wrong.returncode == 2 and "CAMPAIGN_ENGINE_SECRET_KEY" in wrong.stderr, (wrong.stdout, wrong.stderr)
        assert "TAMPERED" not in wrong.stdout + wrong.stderr
