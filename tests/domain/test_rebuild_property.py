"""Property: for random command sequences, a rebuild from position 0 gives exactly the inline models."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import CampaignEngine, ManualClock
from engine.errors import EngineError
from tests.conftest import snapshot
from tests.delivery.smtp_server import SmtpSink

OPS = ["contact", "update_contact", "erase", "list", "list_add", "sender", "campaign", "patch", "launch", "pause",
       "resume", "cancel", "enroll", "unenroll", "suppress", "delete_campaign", "tick_clock", "tick", "tick"]
SINK = SmtpSink()


@pytest.fixture(scope="module", autouse=True)
def _sink() -> Iterator[None]:
    with SINK:
        yield


async def run(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
        async with CampaignEngine(f"sqlite+aiosqlite:///{d}/p.db", clock=clock, secret_key="k" * 32) as e:
            ws = (await e.create_workspace("w")).id
            contacts: list[str] = []
            campaigns: list[str] = []
            lists: list[str] = []
            senders: list[str] = []

            def pick(items: list[str], n: int) -> str:
                return items[n % len(items)] if items else "none_0"

            for op, n in ops:
                try:
                    if op == "contact":
                        contacts.append((await e.create_contact(ws, {"email": f"c{n}@d{n % 3}.io",
                                                                     "first_name": f"F{n}"}))["id"])
                    elif op == "update_contact":
                        await e.update_contact(ws, pick(contacts, n), {"company": f"Co{n}",
                                                                       "custom_fields": {"k": n}})
                    elif op == "erase":
                        await e.erase_contact(ws, pick(contacts, n))
                    elif op == "list":
                        lists.append((await e.create_list(ws, {"name": f"l{n}"}))["id"])
                    elif op == "list_add":
                        await e.add_list_contacts(ws, pick(lists, n), {"contact_ids": [pick(contacts, n)]})
                    elif op == "sender":
                        senders.append((await e.create_sender(ws, {"email": f"s{n}@x.io", "smtp": {
                            "host": SINK.host, "port": SINK.port, "security": "none"}}))["id"])
                    elif op == "campaign":
                        campaigns.append((await e.create_campaign(ws, {
                            "name": f"c{n}", "sender_ids": senders[-1:], "tags": [f"t{n % 2}"],
                            "settings": {"manual_batches": n % 4 == 0},
                            "schedule": {"start_time": "00:00", "end_time": "24:00", "every_minutes": 1 + n % 3},
                            "steps": [{"subject": "Hi {{first_name}}", "body_html": "b"},
                                      {"subject": "Again", "body_html": "c", "delay": {"minutes": n}}]}))["id"])
                    elif op == "patch":
                        await e.update_campaign(ws, pick(campaigns, n), {"name": f"p{n}", "folder": "F"})
                    elif op in ("launch", "pause", "resume", "cancel"):
                        await getattr(e, f"{op}_campaign")(ws, pick(campaigns, n))
                    elif op == "enroll":
                        await e.enroll(ws, pick(campaigns, n), {"contact_ids": contacts[: n % 5 + 1] or ["x"]})
                    elif op == "unenroll":
                        await e.remove_enrollments(ws, pick(campaigns, n), {"contact_ids": [pick(contacts, n)]})
                    elif op == "suppress":
                        await e.add_suppression(ws, {"email": f"c{n}@d{n % 3}.io"})
                    elif op == "delete_campaign":
                        await e.delete_campaign(ws, pick(campaigns, n))
                    elif op == "tick_clock":
                        clock.advance(timedelta(minutes=n))
                    elif op == "tick":
                        clock.advance(timedelta(minutes=n % 4))
                        await e.tick()
                except EngineError:
                    pass
            inline = await snapshot(e)
            await e.rebuild_projections()
            assert await snapshot(e) == inline


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50)), min_size=5, max_size=40))
def test_rebuild_equals_inline(ops: list[tuple[str, int]]) -> None:
    asyncio.run(run(ops))


def test_the_property_exercises_sending() -> None:
    """Guard against a vacuous property: a fixed sequence that launches and ticks must send."""
    before = len(SINK.messages)
    asyncio.run(run([("sender", 1), ("contact", 1), ("contact", 2), ("campaign", 1), ("enroll", 1),
                     ("launch", 0), ("tick", 1), ("tick", 2), ("tick", 3)]))
    assert len(SINK.messages) > before
