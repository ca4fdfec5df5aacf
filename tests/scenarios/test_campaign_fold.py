"""A campaign's state is folded without its skip records, and is the state the whole stream gives.

Enroll appends ``enrollment.skipped`` to the campaign's stream (a list enrolled again skips every
contact already in it); folding the campaign leaves them undecoded. Given a campaign whose stream
holds more skip records than changes, when it is folded, then its state equals the fold of every
event of its stream, its version is the stream's head (so the next command appends after it, not
into a conflict), and commands keep working.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime

from engine import CampaignEngine, ManualClock
from engine.domain import campaign as campaign_domain
from engine.service.base import Reads


def test_a_campaign_folds_without_its_skip_records() -> None:
    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as directory:
            clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
            async with CampaignEngine(f"sqlite+aiosqlite:///{directory}/f.db", clock=clock,
                                      secret_key="k" * 32) as engine:
                ws = (await engine.create_workspace("w")).id
                sender = (await engine.create_sender(ws, {"email": "rep@s.io", "smtp": {
                    "host": "127.0.0.1", "port": 9, "security": "none"}}))["id"]
                cid = (await engine.create_campaign(ws, {"name": "c", "sender_ids": [sender], "steps": [
                    {"subject": "Hi", "body_html": "b"}]}))["id"]
                ids = [(await engine.create_contact(ws, {"email": f"p{number}@corp.io"}))["id"]
                       for number in range(3)]
                await engine.launch_campaign(ws, cid)
                assert (await engine.enroll(ws, cid, {"contact_ids": ids}))["added"] == 3
                for _ in range(2):  # the same contacts again: six skip records on the campaign's stream
                    answer = await engine.enroll(ws, cid, {"contact_ids": ids})
                    assert answer["added"] == 0 and answer["skipped"] == {"already_enrolled": 3}
                await engine.update_campaign(ws, cid, {"description": "after the skips"})
                await engine.pause_campaign(ws, cid)

                stream = await engine.store.read_stream(f"campaign-{cid}")
                assert sum(stored.type == "enrollment.skipped" for stored in stream) == 6
                whole = campaign_domain.CampaignState()
                for stored in stream:
                    whole = campaign_domain.evolve(whole, stored.event)
                state, version = await Reads(engine.store).fold_campaign(None, cid)
                assert state == whole and state.status == "paused"
                assert state.definition.description == "after the skips"
                assert version == stream[-1].version
                assert (await engine.resume_campaign(ws, cid))["status"] == "active"

    asyncio.run(scenario())
