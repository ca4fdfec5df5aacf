"""Every line a delivery causes names its workspace, campaign and sender; the tick report counts per campaign.

Given a launched campaign of two contacts, one of whose messages cannot be built, when the engine
ticks, then the ``compose_failed`` line carries ``workspace_id``, ``campaign_id`` and ``sender_id``
(bound for the claim's whole delivery, so the SMTP client's lines would carry them too), and the
tick's report counts the email sent under ``workspace/campaign/sender``.
"""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

import engine.delivery.content.compose as compose_module
from engine import CampaignEngine
from tests.delivery.smtp_server import SmtpSink
from tests.scale.helpers import build


@pytest.fixture
def captured() -> Any:
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture
    structlog.reset_defaults()


async def test_delivery_lines_name_their_workspace_campaign_and_sender(
        eng: CampaignEngine, sink: SmtpSink, captured: LogCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = await build(eng, sink.host, sink.port, contacts=2, senders=1, campaigns=1)
    original = compose_module.render_step

    def unbuildable_for_c1(definition: Any, step_number: int, contact: Any, *args: Any, **kwargs: Any) -> Any:
        if contact["email"] == "c1@corp1.io":
            raise ValueError("a template this contact's data cannot fill")
        return original(definition, step_number, contact, *args, **kwargs)

    monkeypatch.setattr(compose_module, "render_step", unbuildable_for_c1)
    report = await eng.tick()

    failed = [entry for entry in captured.entries if entry["event"] == "compose_failed"]
    assert len(failed) == 1
    owners = {key: failed[0].get(key) for key in ("workspace_id", "campaign_id", "sender_id")}
    assert owners == {"workspace_id": fleet.workspace_id, "campaign_id": fleet.campaign_ids[0],
                      "sender_id": fleet.sender_ids[0]}
    assert report.sent == 1
    assert report.sent_by == {f"{fleet.workspace_id}/{fleet.campaign_ids[0]}/{fleet.sender_ids[0]}": 1}
    # nothing stays bound once the delivery is over
    assert "campaign_id" not in structlog.contextvars.get_contextvars()
