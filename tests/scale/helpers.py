"""Shared helpers for the scale tests and ``scripts/bench_scale.py``: real worker processes on
PostgreSQL, a campaign set-up built with engine methods, and the checks that read the log back.

The workers run the system clock, so every campaign here has an always-open window (every day,
00:00-24:00, no wait between sends): whatever is due is sendable now, and the only throttles left
are the ones under test (one email per (campaign, sender) pair per tick, the senders' daily limits).
Nothing here waits for a fixed time: callers poll a condition with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from engine import CampaignEngine
from events import schema
from projections import tables as t
from projections.sending import emails
from tests.conftest import snapshot  # noqa: F401  (re-exported for the scale tests)

SECRET = "test-secret-key-0123456789abcdef"  # the same as tests/conftest.py's SECRET
ROOT = Path(__file__).resolve().parents[2]
ALWAYS_OPEN: dict[str, Any] = {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                               "start_time": "00:00", "end_time": "24:00", "min_wait_seconds": 0,
                               "max_wait_seconds": 0}
OUTCOMES = frozenset({"email.sent", "email.deferred", "email.failed", "email.bounced", "email.uncertain",
                      "email.released"})


# -- processes ---------------------------------------------------------------------------------
def cli() -> list[str]:
    """The installed ``campaign-engine`` script beside this interpreter, else ``python -m engine.cli``."""
    found = shutil.which("campaign-engine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "engine.cli"]


def cli_env(claim_batch: int | None = None) -> dict[str, str]:
    """The workers must decrypt what the test's engine wrote: the same secret key.

    `claim_batch` caps the emails a worker claims per tick, so that tests which stop workers
    mid-send find them in the middle of their work rather than done in one tick.
    """
    env = dict(os.environ)
    if claim_batch is not None:
        env["CAMPAIGN_ENGINE_CLAIM_BATCH"] = str(claim_batch)
    env["CAMPAIGN_ENGINE_SECRET_KEY"] = SECRET
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("CAMPAIGN_ENGINE_DB", None)
    return env


class Worker:
    """One ``campaign-engine worker`` process; its output goes to a file (a pipe could fill and block it)."""

    def __init__(self, db_url: str, log_path: Path, *, lease_seconds: float = 600.0, safety_seconds: float = 300.0,
                 poll_seconds: float = 3600.0, smtp_timeout: float = 10.0, claim_batch: int | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [*cli(), "worker", "--db", db_url, "--lease-seconds", str(lease_seconds),
             "--safety-seconds", str(safety_seconds), "--poll-seconds", str(poll_seconds),
             "--smtp-timeout", str(smtp_timeout)],
            stdout=self._log, stderr=subprocess.STDOUT, env=cli_env(claim_batch), cwd=str(ROOT))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait(30)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None and not self._log.closed:
                self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_all(workers: Sequence[Worker]) -> None:
    """Clean-up for a failing test: no process of ours may outlive it."""
    for w in workers:
        if w.running():
            w.proc.send_signal(signal.SIGKILL)
    for w in workers:
        w.wait(30)


def audit_verify(db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli(), "audit", "verify", "--db", db_url], capture_output=True, text=True,
                          env=cli_env(), cwd=str(ROOT), timeout=300, check=False)


async def wait_until(condition: Callable[[], Awaitable[bool]], *, limit: float, what: str,
                     workers: Sequence[Worker] = (), interval: float = 0.25) -> None:
    """Poll ``condition`` until it holds; after ``limit`` seconds fail with the workers' output."""
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- worker {w.pid} (exit {w.proc.poll()}) ---\n{w.output()[-3000:]}" for w in workers)
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}\n{logs}")
        await asyncio.sleep(interval)


# -- set-up ------------------------------------------------------------------------------------
@dataclass
class Fleet:
    """What :func:`build` created."""

    workspace_id: str
    sender_ids: list[str]
    sender_emails: dict[str, str]
    campaign_ids: list[str]
    contact_ids: list[str]
    emails_total: int


async def build(engine: CampaignEngine, host: str, port: int, *, contacts: int, senders: int, campaigns: int,
                daily_limit: int = 100_000, steps: int = 1, chunk: int = 1000) -> Fleet:
    """A workspace, ``senders`` senders on the sink, ``contacts`` contacts imported in chunks, and
    ``campaigns`` launched campaigns sharing every sender, the contacts dealt out round-robin."""
    ws = (await engine.create_workspace("scale", monthly_limit=1_000_000)).id
    sender_ids: list[str] = []
    sender_emails: dict[str, str] = {}
    for i in range(senders):
        address = f"rep{i}@sender{i}.io"
        sid = (await engine.create_sender(ws, {"email": address, "from_name": f"Rep {i}", "daily_limit": daily_limit,
                                               "smtp": {"host": host, "port": port, "security": "none"}}))["id"]
        sender_ids.append(sid)
        sender_emails[sid] = address
    rows = [{"email": f"c{i}@corp{i % 97}.io", "first_name": f"C{i}", "company": f"Corp {i % 97}"}
            for i in range(contacts)]
    for start in range(0, len(rows), chunk):
        result = await engine.import_contacts(ws, rows[start:start + chunk])
        assert not result["invalid"], result["invalid"][:3]
    async with engine.store.reading() as conn:
        contact_ids = [r[0] for r in (await conn.execute(
            select(t.contacts.c.id).where(t.contacts.c.workspace_id == ws).order_by(t.contacts.c.id))).all()]
    assert len(contact_ids) == contacts
    step_defs = [{"subject": "Hello {{first_name}}", "body_html": "<p>Hi {{first_name}} at {{company}}</p>",
                  "delay": {"days": 0}}]
    step_defs += [{"subject": f"Step {n}", "body_html": f"<p>Follow-up {n}</p>", "delay": {"days": 0}}
                  for n in range(2, steps + 1)]
    campaign_ids = []
    for k in range(campaigns):
        cmp = await engine.create_campaign(ws, {"name": f"scale {k}", "sender_ids": sender_ids, "steps": step_defs,
                                                "schedule": ALWAYS_OPEN,
                                                "settings": {"track_opens": False, "track_clicks": False}})
        mine = contact_ids[k::campaigns]
        for start in range(0, len(mine), chunk):
            done = await engine.enroll(ws, cmp["id"], {"contact_ids": mine[start:start + chunk]})
            assert done["added"] == len(mine[start:start + chunk]), done
        campaign_ids.append(cmp["id"])
    for cid in campaign_ids:
        await engine.launch_campaign(ws, cid)
    return Fleet(ws, sender_ids, sender_emails, campaign_ids, contact_ids, contacts * steps)


# -- what the database says --------------------------------------------------------------------
async def email_statuses(engine: CampaignEngine) -> Counter[str]:
    async with engine.store.reading() as conn:
        rows = (await conn.execute(select(emails.c.status, func.count()).group_by(emails.c.status))).all()
    return Counter({r[0]: int(r[1]) for r in rows})


async def claims_made(engine: CampaignEngine) -> int:
    async with engine.store.reading() as conn:
        return int((await conn.execute(select(func.count()).select_from(schema.events)
                                       .where(schema.events.c.type == "email.claimed"))).scalar() or 0)




def bare(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>")


@dataclass
class LogFacts:
    """The email history read back from the log, checked against the sink."""

    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)  # email_id -> type of its last email event
    received: Counter[str] = field(default_factory=Counter)  # bare Message-ID -> times the sink got it


async def read_log(engine: CampaignEngine, received_ids: Sequence[str | None]) -> LogFacts:
    """Read the whole log and check the sending invariants.

    - positions are 1..N without a hole (no event lost);
    - every ``email.claimed`` is followed, on its enrollment stream, by an outcome for that email;
    - after ``email.uncertain`` the email is never claimed or sent again;
    - no Message-ID reached the sink twice, each ``email.sent`` reached it exactly once, and every
      message the sink got belongs to a claim in the log.
    """
    facts = LogFacts(received=Counter(bare(m) for m in received_ids))
    history: dict[str, list[tuple[int, str]]] = defaultdict(list)
    message_ids: dict[str, str] = {}
    after = 0
    expected = 1
    while True:
        batch = await engine.store.read_all(after, 5000)
        if not batch:
            break
        for ev in batch:
            if ev.position != expected:
                facts.problems.append(f"position {expected} missing (next is {ev.position})")
            expected = ev.position + 1
            facts.by_type[ev.type] += 1
            email_id = getattr(ev.event, "email_id", None) if ev.type.startswith("email.") else None
            if email_id:
                history[email_id].append((ev.position, ev.type))
                if ev.type == "email.claimed":
                    message_ids[email_id] = bare(ev.event.message_id)  # type: ignore[attr-defined]
        after = batch[-1].position
        facts.events += len(batch)
    for email_id, evs in history.items():
        types = [ty for _pos, ty in evs]
        sending = [ty for ty in types if ty in OUTCOMES or ty == "email.claimed"]
        if sending:
            facts.final[email_id] = sending[-1]
        for i, ty in enumerate(types):
            if ty == "email.claimed":
                rest = [x for x in types[i + 1:] if x in OUTCOMES or x == "email.claimed"]
                if not rest or rest[0] not in OUTCOMES:
                    facts.problems.append(f"{email_id}: a claim without an outcome ({types})")
            if ty == "email.uncertain" and any(x in ("email.claimed", "email.sent") for x in types[i + 1:]):
                facts.problems.append(f"{email_id}: claimed or sent again after uncertain ({types})")
        sent = types.count("email.sent")
        if sent > 1:
            facts.problems.append(f"{email_id}: sent {sent} times")
        mid = message_ids.get(email_id)
        if sent and mid and facts.received[mid] != 1:
            facts.problems.append(f"{email_id}: sent, but the sink got it {facts.received[mid]} times")
    twice = [m for m, n in facts.received.items() if n > 1]
    if twice:
        facts.problems.append(f"{len(twice)} Message-IDs received more than once, e.g. {twice[:3]}")
    unknown = set(facts.received) - set(message_ids.values())
    if unknown:
        facts.problems.append(f"{len(unknown)} received Message-IDs never claimed, e.g. {sorted(unknown)[:3]}")
    return facts
