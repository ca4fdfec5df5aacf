"""``receive_message``: one raw message handed in by the application (a provider's inbound webhook)
takes the path of a polled one: classified, matched by Message-ID, recorded once."""

from __future__ import annotations

import pytest

from engine import CampaignEngine, ManualClock
from engine.errors import BadRequest, NotFound
from tests.delivery.dovecot import Dovecot
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_inbound import dsn, imap, mid, reply, send_first_steps, start

__all__ = ["imap"]  # the Dovecot fixture, shared with the polling tests


async def test_a_received_reply_and_bounce_are_recorded_once_however_they_arrive(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, imap: Dovecot) -> None:
    """Given two sent emails, when a reply and a DSN are received (twice, then polled too), then each counts once."""
    ws, sid, cid, ids = await start(eng, sink, imap, ["ann@corp.io", "dead@corp.io"], {})
    await send_first_steps(eng, clock, 2)
    answer = reply(mid(sink, "ann@corp.io"), "ann@corp.io")
    bounce = dsn(mid(sink, "dead@corp.io"), "dead@corp.io", "5.1.1", "550 5.1.1 User unknown")

    first = await eng.receive_message(answer, sender_id=sid)
    assert (first.messages, first.replies) == (1, 1)
    bounced = await eng.receive_message(bounce, workspace_id=ws)
    assert (bounced.messages, bounced.bounces) == (1, 1)

    again = await eng.receive_message(answer, workspace_id=ws, sender_id=sid)
    assert (again.messages, again.replies, again.ignored) == (1, 0, 0)  # seen: nothing appended
    imap.append("rep", answer)
    imap.append("rep", bounce)
    polled = await eng.poll_mailboxes()
    assert (polled.messages, polled.replies, polled.bounces) == (2, 0, 0)  # the poll's dedupe is the same one

    status = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cid))["data"]}
    assert status == {ids["ann@corp.io"]: "replied", ids["dead@corp.io"]: "bounced"}
    stats = await eng.campaign_stats(ws, cid)
    assert stats["engagement"]["replied"] == 1 and stats["emails"]["bounced"] == 1
    assert len((await eng.list_events(ws, type="email.replied"))["data"]) == 1
    assert len((await eng.list_events(ws, type="email.bounced"))["data"]) == 1


async def test_a_message_for_an_unknown_or_foreign_mailbox_is_refused_and_changes_nothing(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, imap: Dovecot) -> None:
    """Given a sent email, when its reply is handed in with bad arguments, then a clear error and no event."""
    ws, sid, cid, _ids = await start(eng, sink, imap, ["ann@corp.io"], {})
    await send_first_steps(eng, clock, 1)
    other = (await eng.create_workspace("other")).id
    answer = reply(mid(sink, "ann@corp.io"), "ann@corp.io")
    before = (await eng.list_events(ws, limit=1000))["data"][-1]["position"]

    with pytest.raises(BadRequest, match="workspace_id or the sender_id"):
        await eng.receive_message(answer)
    with pytest.raises(BadRequest, match="empty"):
        await eng.receive_message(b"  \r\n", workspace_id=ws)
    with pytest.raises(BadRequest, match="bytes"):
        await eng.receive_message(answer.decode(), workspace_id=ws)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await eng.receive_message(answer, sender_id="snd_unknown")
    with pytest.raises(NotFound):
        await eng.receive_message(answer, workspace_id=other, sender_id=sid)  # not that workspace's sender
    with pytest.raises(NotFound):
        await eng.receive_message(answer, workspace_id="ws_unknown")

    assert (await eng.list_events(ws, limit=1000, after=before))["data"] == []
    # and the message is still unseen: handed in properly it counts
    assert (await eng.receive_message(answer, sender_id=sid)).replies == 1
    assert (await eng.campaign_stats(ws, cid))["engagement"]["replied"] == 1
