"""What every fault case needs: a campaign on the sink, structlog captured (with triggers that end a
fault when the engine reports it), and the checks that read the log back afterwards.

A fault case reads: given a launched campaign, when the fault strikes in the middle of a tick (or a
poll), then the log names it (an error or a retry), nothing acknowledged is lost, nothing is
appended twice, and the next tick or poll after the fault works as if nothing had happened.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from structlog.exceptions import DropEvent

from engine import CampaignEngine
from engine.service.audit import verify_log
from tests.delivery.smtp_server import ReceivedMessage, SmtpSink
from tests.scale.helpers import ALWAYS_OPEN, read_log


class LogTap:
    """A structlog processor that keeps every entry and runs a callback on chosen event names.

    The callbacks run inside the engine's own logging call, so a fault can be lifted at the very
    moment the engine says it is retrying: no timer decides when a fault ends.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._triggers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._lock = threading.Lock()

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        entry = {**event_dict, "log_level": method}
        with self._lock:
            self.entries.append(entry)
            callbacks = list(self._triggers.get(str(entry.get("event")), ()))
        for callback in callbacks:
            callback(entry)
        raise DropEvent

    def on(self, event: str, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(entry)`` each time the engine logs ``event``."""
        with self._lock:
            self._triggers.setdefault(event, []).append(callback)

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.entries if e.get("event") == event]


@contextmanager
def tapped_logs() -> Iterator[LogTap]:
    """structlog sends everything to a :class:`LogTap` for the block (as ``capture_logs`` does)."""
    tap = LogTap()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[tap])
    try:
        yield tap
    finally:
        structlog.configure(processors=previous)


class HookedSink(SmtpSink):
    """The aiosmtpd sink, calling ``on_message`` (in the server's thread) after it has taken a
    message and before it answers 250: a fault injected there strikes after the engine's claim
    committed and before it records the outcome, the middle of a tick."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_message: Callable[[ReceivedMessage], None] | None = None

    def _record(self, server: Any, session: Any, envelope: Any) -> None:
        super()._record(server, session, envelope)
        hook = self.on_message
        if hook is not None:
            hook(self.messages[-1])


@dataclass
class Setup:
    """What :func:`start_campaign` created."""

    workspace_id: str
    sender_id: str
    campaign_id: str
    contact_ids: dict[str, str] = field(default_factory=dict)  # address -> contact id


async def start_campaign(engine: CampaignEngine, sink: SmtpSink, addresses: list[str], *,
                         settings: dict[str, Any] | None = None, imap: dict[str, Any] | None = None,
                         steps: int = 1) -> Setup:
    """A workspace, one sender on the sink, the contacts and a launched campaign that may send at
    any moment (an always-open window, no wait between sends); steps after the first wait a day."""
    ws = (await engine.create_workspace("faults", monthly_limit=100_000)).id
    sender: dict[str, Any] = {"email": "rep@sales.io", "daily_limit": 10_000,
                              "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}
    if imap is not None:
        sender["imap"] = imap
    sender_id = (await engine.create_sender(ws, sender))["id"]
    contact_ids = {address: (await engine.create_contact(ws, {"email": address}))["id"] for address in addresses}
    step_defs = [{"subject": f"Step {n}", "body_html": f"<p>Step {n} for {{{{email}}}}</p>",
                  "delay": {"days": 0 if n == 1 else 1}} for n in range(1, steps + 1)]
    campaign = await engine.create_campaign(ws, {
        "name": "fault matrix", "sender_ids": [sender_id], "steps": step_defs, "schedule": ALWAYS_OPEN,
        "settings": {"track_opens": False, "track_clicks": False, **(settings or {})}})
    await engine.enroll(ws, campaign["id"], {"contact_ids": list(contact_ids.values())})
    await engine.launch_campaign(ws, campaign["id"])
    return Setup(ws, sender_id, campaign["id"], contact_ids)


async def log_prefix(engine: CampaignEngine) -> list[tuple[int, str, str]]:
    """(position, type, hash) of every event so far: what has been acknowledged."""
    out: list[tuple[int, str, str]] = []
    after = 0
    while batch := await engine.store.read_all(after, 5000):
        out.extend((ev.position, ev.type, ev.hash) for ev in batch)
        after = batch[-1].position
    return out


async def types_count(engine: CampaignEngine) -> Counter[str]:
    return Counter(kind for _position, kind, _hash in await log_prefix(engine))


async def assert_log_sound(engine: CampaignEngine, sink: SmtpSink,
                           acknowledged: list[tuple[int, str, str]]) -> Counter[str]:
    """The checks every fault case ends with; returns the count of events by type.

    - every event acknowledged before the fault is still there, unchanged (no lost write);
    - positions have no hole, each claim has one outcome, nothing is sent twice and every message
      the SMTP server took is recorded as sent exactly once (``read_log``);
    - every stream's hash chain, versions and head verify (what ``audit verify`` checks).
    """
    now = await log_prefix(engine)
    assert now[:len(acknowledged)] == acknowledged, "an acknowledged event changed or disappeared"
    facts = await read_log(engine, [m.message_id for m in sink.messages])
    assert not facts.problems, facts.problems
    sent_ids = {mid for mid, times in facts.received.items() if times}
    recorded = {email_id for email_id, last in facts.final.items() if last == "email.sent"}
    assert len(recorded) == len(sent_ids), (facts.final, sent_ids)
    report = await verify_log(engine.store)
    assert report.ok, report.problems
    return facts.by_type
