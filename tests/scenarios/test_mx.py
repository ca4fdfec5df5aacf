"""verify_mx at first send, against a real DNS server on a loopback port."""

from __future__ import annotations

from datetime import timedelta

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.dns_server import DnsServer
from tests.delivery.smtp_server import SmtpSink

RECORDS = {"good.io": {"MX": ["10 mx.good.io."]}, "mx.good.io": {"A": ["192.0.2.1"]},
           "nullmx.io": {"MX": ["0 ."]}, "aonly.io": {"A": ["192.0.2.2"]}}


async def test_mx_invalid_skips_unknown_waits(sqlite_url: str, clock: ManualClock) -> None:
    with DnsServer(RECORDS, servfail=["flaky.io"], silent=["slow.io"]) as dns, SmtpSink() as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, dns_nameservers=dns.nameservers,
                                  dns_timeout=0.5) as eng:
            ws = (await eng.create_workspace("w")).id
            sid = (await eng.create_sender(ws, {"email": "r@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
            domains = ["good.io", "nullmx.io", "aonly.io", "nowhere.io", "flaky.io", "slow.io"]
            ids = {d: (await eng.create_contact(ws, {"email": f"x@{d}"}))["id"] for d in domains}
            cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "settings": {"verify_mx": True},
                "schedule": {"start_time": "00:00", "end_time": "24:00", "every_minutes": 1}})
            await eng.enroll(ws, cmp["id"], {"contact_ids": list(ids.values())})
            await eng.launch_campaign(ws, cmp["id"])
            for _ in range(8):
                await eng.tick()
                clock.advance(timedelta(minutes=1))
            got = sorted(m.rcpt_tos[0] for m in sink.messages)
            assert got == ["x@aonly.io", "x@good.io"]
            rows = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cmp["id"]))["data"]}
            assert rows[ids["nullmx.io"]] == "skipped" and rows[ids["nowhere.io"]] == "skipped"
            assert rows[ids["flaky.io"]] == "pending" and rows[ids["slow.io"]] == "pending"  # never dropped
            stats = await eng.campaign_stats(ws, cmp["id"])
            assert stats["skipped"]["mx_invalid"] == 2
            dns.set_behaviour("flaky.io", None)
            dns.set_records("flaky.io", {"MX": ["10 mx.good.io."]})
            # Held until the checker's retry time, which the tick reports: a caller that ticks at
            # every next_due_at waits minutes, never spins, and sends once the answer comes.
            for _ in range(6):
                report = await eng.tick()
                if "x@flaky.io" in [m.rcpt_tos[0] for m in sink.messages]:
                    break
                assert report.next_due_at is not None
                assert report.next_due_at - clock.now() >= timedelta(minutes=1)
                clock.set(report.next_due_at)
            assert "x@flaky.io" in [m.rcpt_tos[0] for m in sink.messages]
