"""Tracking and unsubscribe endpoints, driven by the links of emails really sent to an SMTP sink."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock
from engine.delivery.content.tokens import click_token, open_token, unsubscribe_token
from engine.service.tracking import is_prefetch, redirect_target
from tests.api.test_management_api import event_count
from tests.delivery.smtp_server import SmtpSink

PRICING = "https://example.org/pricing?plan=pro&ref=mail"
DOCS = "http://docs.example.org/start"
APPLE_MPP = "Mozilla/5.0"
READER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
ALWAYS = {"timezone": "UTC", "start_time": "00:00", "end_time": "24:00", "every_minutes": 1}
TRACKED = {"track_opens": True, "track_clicks": True, "unsubscribe_link": True}


@dataclass
class Links:
    """The tracking paths found in one received message."""

    to: str
    subject: str
    pixel: str
    clicks: list[str]
    unsubscribe: str


def links_of(raw: bytes) -> Links:
    msg = message_from_bytes(raw, policy=policy.default)
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    pixel = re.findall(r'<img src="https://track\.example\.com(/t/o/[^"]+)"', html)
    clicks = re.findall(r'href="https://track\.example\.com(/t/c/[^"]+)"', html)
    unsub = re.search(r"<https://track\.example\.com(/u/[^>]+)>", str(msg["List-Unsubscribe"]))
    assert len(pixel) == 1 and unsub is not None
    return Links(msg["To"].addresses[0].addr_spec, str(msg["Subject"]), pixel[0], clicks, unsub.group(1))


@dataclass
class World:
    ws: str
    cid: str
    contacts: list[str]


async def launch(eng: CampaignEngine, sink: SmtpSink, *, contacts: int, steps: int = 1, subject: str = "Hello",
                 ws: str | None = None, enroll: list[str] | None = None) -> World:
    if ws is None:
        ws = (await eng.create_workspace("acme", monthly_limit=10_000)).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 500,
                                        "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = enroll or [(await eng.create_contact(ws, {"email": f"p{i}@corp.io", "first_name": f"P{i}"}))["id"]
                     for i in range(contacts)]
    body = f'<p>Hi {{{{first_name}}}}, see <a href="{PRICING}">pricing</a> and <a href="{DOCS}">docs</a>.</p>'
    step_defs: list[dict[str, Any]] = [{"subject": subject, "body_html": body}]
    step_defs += [{"subject": f"Step {n}", "body_html": f"<p>Follow-up {n}</p>", "delay": {"days": n - 1}}
                  for n in range(2, steps + 1)]
    cmp = await eng.create_campaign(ws, {"name": "Tracked", "sender_ids": [sid], "steps": step_defs,
                                         "settings": TRACKED, "schedule": ALWAYS})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    return World(ws, cmp["id"], ids)


async def send_first_steps(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, n: int
                           ) -> dict[tuple[str, str], Links]:
    """Tick until ``n`` messages reached the sink; their links by (recipient, subject)."""
    for _ in range(n * 3):
        if len(sink.messages) >= n:
            break
        await eng.tick()
        clock.advance(timedelta(minutes=1))
    assert len(sink.messages) == n
    return {(links.to, links.subject): links for links in (links_of(m.data) for m in sink.messages)}


async def events_of(eng: CampaignEngine, ws: str, kind: str) -> list[dict[str, Any]]:
    return list((await eng.list_events(ws, limit=1000, type=kind))["data"])


async def engagement(eng: CampaignEngine, w: World) -> dict[str, int]:
    return dict((await eng.campaign_stats(w.ws, w.cid))["engagement"])


def tamper(path: str, where: str) -> str:
    """Flip one character of the token's payload or of its signature."""
    prefix, token = path.rsplit("/", 1)
    body, mac = token.split(".")
    if where == "payload":
        body = body[:3] + ("A" if body[3] != "A" else "B") + body[4:]
    else:
        mac = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return f"{prefix}/{body}.{mac}"


# -- opens ---------------------------------------------------------------------------------------
async def test_pixel_counts_one_open_per_email(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                               web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    for _ in range(2):
        r = await web.get(links.pixel, headers={"User-Agent": READER})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        assert r.content[:6] == b"GIF89a" and r.content[6:10] == b"\x01\x00\x01\x00"  # 1x1
        assert "no-cache" in r.headers["cache-control"] and "no-store" in r.headers["cache-control"]
    opened = await events_of(eng, w.ws, "email.opened")
    assert len(opened) == 1 and opened[0]["data"]["prefetch"] is False
    assert opened[0]["data"]["user_agent"] == READER
    assert (await engagement(eng, w))["opened"] == 1
    assert (await eng.campaign_stats(w.ws, w.cid))["rates"]["open_rate"] == 100.0


@pytest.mark.parametrize("agent", [APPLE_MPP, GMAIL_PROXY, "Mozilla/5.0 (compatible; YahooMailProxy; x)", ""])
async def test_prefetchers_are_recorded_but_not_counted(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                        web: httpx.AsyncClient, agent: str) -> None:
    w = await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    for _ in range(2):
        assert (await web.get(links.pixel, headers={"User-Agent": agent})).status_code == 200
    [prefetch] = await events_of(eng, w.ws, "email.opened")  # a second prefetch appends nothing
    assert prefetch["data"]["prefetch"] is True
    assert (await engagement(eng, w))["opened"] == 0
    await web.get(links.pixel, headers={"User-Agent": READER})  # the person reads it later
    assert (await engagement(eng, w))["opened"] == 1
    assert [e["data"]["prefetch"] for e in await events_of(eng, w.ws, "email.opened")] == [True, False]


def test_prefetch_rules() -> None:
    assert is_prefetch("Mozilla/5.0") and is_prefetch(" Mozilla/5.0 ") and is_prefetch(None)
    assert is_prefetch("Mozilla/5.0 (via ggpht.com)") and is_prefetch("yahoomailproxy")
    assert not is_prefetch(READER) and not is_prefetch("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Outlook")
    assert not is_prefetch(GMAIL_PROXY, patterns=())  # the option can drop the proxy list


async def test_bad_or_unsent_pixel_answers_the_same_gif_and_records_nothing(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1, steps=2)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    good = await web.get(links.pixel, headers={"User-Agent": READER})
    before = await event_count(eng)
    enrollment = (await eng.list_enrollments(w.ws, w.cid))["data"][0]["id"]
    unsent = f"/t/o/{open_token(eng.vault.token_key, f'{enrollment}.2')}"  # step 2 is only scheduled
    foreign = f"/t/o/{open_token(b'another-secret-key-0123456789', f'{enrollment}.1')}"
    click_as_open = "/t/o/" + links.clicks[0].rsplit("/", 1)[1]
    for path in (tamper(links.pixel, "payload"), tamper(links.pixel, "signature"), unsent, foreign,
                 click_as_open, "/t/o/not-a-token"):
        r = await web.get(path, headers={"User-Agent": READER})
        # the same answer, byte for byte, but for the id every request gets
        same = {k: v for k, v in r.headers.items() if k != "x-request-id"}
        assert same == {k: v for k, v in good.headers.items() if k != "x-request-id"}, path
        assert r.status_code == 200 and r.content == good.content, path
    assert await event_count(eng) == before


# -- clicks --------------------------------------------------------------------------------------
async def test_click_redirects_to_the_original_link_and_counts_once(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    assert len(links.clicks) == 2
    r = await web.get(links.clicks[0], headers={"User-Agent": READER})
    assert r.status_code == 302 and r.headers["location"] == PRICING
    assert r.headers["referrer-policy"] == "no-referrer"
    r = await web.get(links.clicks[1], headers={"User-Agent": READER})  # httpx's own would read as a script
    assert r.status_code == 302 and r.headers["location"] == DOCS
    await web.get(links.clicks[0], headers={"User-Agent": READER})
    clicked = await events_of(eng, w.ws, "email.clicked")
    assert [(e["data"]["url"], e["data"]["link_index"]) for e in clicked] == [(PRICING, 0), (DOCS, 1), (PRICING, 0)]
    assert await engagement(eng, w) == {"opened": 1, "clicked": 1, "replied": 0, "unsubscribed": 0,
                                        "out_of_office": 0, "opens_total": 1}
    assert await eng.campaign_link_stats(w.ws, w.cid) == [{"url": PRICING, "clicks": 2, "unique_clicks": 1},
                                                          {"url": DOCS, "clicks": 1, "unique_clicks": 1}]
    [implied] = await events_of(eng, w.ws, "email.opened")  # the click implied the open, once
    assert implied["data"]["prefetch"] is False


async def test_forged_altered_or_foreign_click_tokens_are_404(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1, steps=2)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    enrollment = (await eng.list_enrollments(w.ws, w.cid))["data"][0]["id"]
    key = eng.vault.token_key
    before = await event_count(eng)
    bad = [
        tamper(links.clicks[0], "payload"), tamper(links.clicks[0], "signature"),
        "/t/c/" + links.pixel.rsplit("/", 1)[1],  # an open token is not a click token
        "/t/c/" + links.unsubscribe.rsplit("/", 1)[1],
        f"/t/c/{click_token(key, f'{enrollment}.1', 2)}",  # index out of range
        f"/t/c/{click_token(key, f'{enrollment}.2', 0)}",  # not sent yet
        f"/t/c/{click_token(key, 'enr_unknown.1', 0)}",
        f"/t/c/{click_token(b'another-secret-key-0123456789', f'{enrollment}.1', 0)}",
        "/t/c/x.y",
    ]
    for path in bad:
        r = await web.get(path)
        assert r.status_code == 404 and "location" not in r.headers, path
        assert r.json()["error"]["code"] == "not_found"
    assert await event_count(eng) == before
    assert (await engagement(eng, w))["clicked"] == 0


def test_only_absolute_http_targets_are_redirected() -> None:
    assert redirect_target(PRICING) == PRICING and redirect_target(DOCS) == DOCS
    for url in ("javascript:alert(1)", "data:text/html,x", "//evil.example", "/relative", "https://",
                "https://ok.example/\r\nSet-Cookie: a=b", "ftp://files.example/x", None, 42):
        assert redirect_target(url) is None, url


# -- unsubscribe ---------------------------------------------------------------------------------
async def test_unsubscribe_page_changes_nothing(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                web: httpx.AsyncClient) -> None:
    await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    before = await event_count(eng)
    r = await web.get(links.unsubscribe)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    token = links.unsubscribe.rsplit("/", 1)[1]
    assert '<form method="post"' in r.text and f'action="{token}"' in r.text
    assert "p0@corp.io" not in r.text  # the page shows no personal data to whoever holds the link
    assert await event_count(eng) == before
    for path in (tamper(links.unsubscribe, "payload"), tamper(links.unsubscribe, "signature"),
                 "/u/" + links.pixel.rsplit("/", 1)[1]):
        assert (await web.get(path)).status_code == 404
        assert (await web.post(path, content=b"List-Unsubscribe=One-Click")).status_code == 404
    assert await event_count(eng) == before


async def test_one_click_unsubscribe_stops_everything(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                      web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=2, steps=2)
    other = await launch(eng, sink, contacts=0, steps=2, subject="Other", ws=w.ws, enroll=[w.contacts[0]])
    first = (await send_first_steps(eng, clock, sink, 3))[("p0@corp.io", "Hello")]
    leaving = w.contacts[0]

    r = await web.post(first.unsubscribe, content=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "unsubscribed" in r.text
    [unsub] = await events_of(eng, w.ws, "contact.unsubscribed")
    enrollment = next(e for e in (await eng.list_enrollments(w.ws, w.cid))["data"] if e["contact_id"] == leaving)
    elsewhere = (await eng.list_enrollments(w.ws, other.cid))["data"][0]
    assert unsub["stream"] == f"contact-{leaving}"
    assert unsub["data"] == {"contact_id": leaving, "reason": "one_click", "campaign_id": w.cid,
                             "email_id": f"{enrollment['id']}.1"}
    assert (await eng.get_contact(w.ws, leaving))["unsubscribed"] is True
    statuses = {(c, e["status"]) for c in (w.cid, other.cid)
                for e in (await eng.list_enrollments(w.ws, c))["data"] if e["contact_id"] == leaving}
    assert statuses == {(w.cid, "unsubscribed"), (other.cid, "unsubscribed")}
    cancelled = await events_of(eng, w.ws, "email.cancelled")
    assert sorted(e["data"]["email_id"] for e in cancelled) == sorted(  # the waiting follow-ups
        [f"{enrollment['id']}.2", f"{elsewhere['id']}.2"])
    supp = (await eng.list_suppressions(w.ws))["data"]
    assert [(s["value"], s["reason"]) for s in supp] == [("p0@corp.io", "unsubscribed")]
    [added] = await events_of(eng, w.ws, "suppression.added")
    assert added["data"]["subject_id"] == leaving
    assert (await engagement(eng, w))["unsubscribed"] == 1

    before = await event_count(eng)  # idempotent: again, and with any body
    for body in (b"List-Unsubscribe=One-Click", b"", b"whatever"):
        assert (await web.post(first.unsubscribe, content=body)).status_code == 200
    assert (await web.get(first.unsubscribe)).status_code == 200
    assert await event_count(eng) == before

    third = await launch(eng, sink, contacts=0, ws=w.ws, enroll=[leaving])
    assert (await eng.campaign_stats(w.ws, third.cid))["skipped"]["unsubscribed"] == 1

    received = len(sink.messages)
    clock.advance(timedelta(days=5))  # well past step 2's due time
    for _ in range(10):
        report = await eng.tick()
        if report.next_due_at is None:
            break
        clock.set(report.next_due_at)
    rcpts = [m.rcpt_tos[0] for m in sink.messages[received:]]
    assert rcpts == ["p1@corp.io"]  # only the contact who stayed gets the follow-up


async def test_erased_contact_unsubscribe_appends_nothing(eng: CampaignEngine, clock: ManualClock,
                                                          sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    await eng.erase_contact(w.ws, w.contacts[0])
    before = await event_count(eng)
    assert (await web.post(links.unsubscribe, content=b"List-Unsubscribe=One-Click")).status_code == 200
    assert (await web.get(links.unsubscribe)).status_code == 200
    assert (await web.get(links.pixel, headers={"User-Agent": READER})).status_code == 200
    r = await web.get(links.clicks[0])
    assert r.status_code == 404  # rendered links may hold personal data: they were erased with the person
    assert await event_count(eng) == before


async def test_unsubscribe_token_of_another_workspace_is_404(eng: CampaignEngine, clock: ManualClock,
                                                             sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1)
    await send_first_steps(eng, clock, sink, 1)
    rival = (await eng.create_workspace("rival")).id
    enrollment = (await eng.list_enrollments(w.ws, w.cid))["data"][0]["id"]
    token = unsubscribe_token(eng.vault.token_key, rival, w.contacts[0], f"{enrollment}.1")
    before = await event_count(eng)
    assert (await web.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")).status_code == 404
    assert await event_count(eng) == before
