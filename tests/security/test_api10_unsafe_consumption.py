"""OWASP API10:2023 Unsafe Consumption of APIs: what recipients' mail clients send back is verified.

The engine consumes links it wrote into emails: the open pixel, tracked links and the one-click
unsubscribe, each carrying a signed token (HMAC over the token's kind and payload). Given the
tokens of an email really sent through an SMTP server; when any one character of a token is
changed, dropped or added, at every position, or a token of one kind is used as another, or one is
signed under another secret; then the pixel records nothing (answering the same GIF), the link is
404 with no ``Location`` and the unsubscribe page and its POST are 404, nothing is appended and
the contact stays subscribed. The genuine tokens then work, so the refusals were the signature's.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

import httpx

from engine import CampaignEngine, ManualClock
from engine.delivery.content.tokens import click_token, open_token, unsubscribe_token
from tests.api.test_tracking import PRICING, READER, Links, launch, send_first_steps
from tests.delivery.smtp_server import SmtpSink
from tests.security.conftest import last_position

ALPHABET = string.ascii_letters + string.digits + "-_"


def mutations(token: str) -> Iterator[str]:
    """Every single-character substitution, one deletion and one insertion per position, and the ends."""
    for index, char in enumerate(token):
        yield token[:index] + (ALPHABET[(ALPHABET.find(char) + 1) % len(ALPHABET)] if char != "." else "-") + \
            token[index + 1:]
        yield token[:index] + token[index + 1:]
        yield token[:index] + "A" + token[index:]
    yield token + "A"
    yield token.split(".")[0]
    yield "." + token.split(".")[1]


async def sent_links(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> tuple[str, str, Links]:
    """(workspace, contact, the links) of one email really sent."""
    world = await launch(eng, sink, contacts=1)
    [links] = (await send_first_steps(eng, clock, sink, 1)).values()
    return world.ws, world.contacts[0], links


async def assert_refused(web: httpx.AsyncClient, kind: str, token: str, gif: bytes) -> None:
    if kind == "o":
        answer = await web.get(f"/t/o/{token}", headers={"User-Agent": READER})
        assert answer.status_code == 200 and answer.content == gif, token
    elif kind == "c":
        answer = await web.get(f"/t/c/{token}", headers={"User-Agent": READER})
        assert answer.status_code == 404 and "location" not in answer.headers, token
        assert answer.json()["error"]["code"] == "not_found"
    else:
        assert (await web.get(f"/u/{token}")).status_code == 404, token
        answer = await web.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
        assert answer.status_code == 404, token


async def test_every_altered_token_is_refused_and_records_nothing(eng: CampaignEngine, clock: ManualClock,
                                                                  sink: SmtpSink, web: httpx.AsyncClient) -> None:
    ws, contact, links = await sent_links(eng, clock, sink)
    tokens = {"o": links.pixel.rsplit("/", 1)[1], "c": links.clicks[0].rsplit("/", 1)[1],
              "u": links.unsubscribe.rsplit("/", 1)[1]}
    gif = (await web.get("/t/o/not-a-token")).content
    before = await last_position(eng)
    tried = 0
    for kind, token in tokens.items():
        for altered in set(mutations(token)) - {token}:
            await assert_refused(web, kind, altered, gif)
            tried += 1
    assert tried > 300
    assert await last_position(eng) == before
    assert (await eng.get_contact(ws, contact))["unsubscribed"] is False
    # the genuine tokens work: the refusals above were the signature's doing
    opened = await web.get(links.pixel, headers={"User-Agent": READER})
    clicked = await web.get(links.clicks[0], headers={"User-Agent": READER})
    assert opened.status_code == 200 and clicked.status_code == 302 and clicked.headers["location"] == PRICING
    for answer in (opened, clicked):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer" and "no-store" in answer.headers["cache-control"]
    assert (await web.post(links.unsubscribe, content=b"List-Unsubscribe=One-Click")).status_code == 200
    assert (await eng.get_contact(ws, contact))["unsubscribed"] is True


async def test_tokens_of_another_kind_or_secret_are_refused(eng: CampaignEngine, clock: ManualClock,
                                                            sink: SmtpSink, web: httpx.AsyncClient) -> None:
    ws, contact, links = await sent_links(eng, clock, sink)
    email_id = f"{(await eng.list_enrollments(ws, (await eng.list_campaigns(ws))['data'][0]['id']))['data'][0]['id']}.1"
    pixel, link, unsubscribe = (path.rsplit("/", 1)[1] for path in (links.pixel, links.clicks[0], links.unsubscribe))
    other = b"another-deployment-secret-0123456789"
    gif = (await web.get("/t/o/not-a-token")).content
    before = await last_position(eng)
    for kind, token in [("o", link), ("o", unsubscribe), ("c", pixel), ("c", unsubscribe), ("u", pixel), ("u", link),
                        ("o", open_token(other, email_id)), ("c", click_token(other, email_id, 0)),
                        ("u", unsubscribe_token(other, ws, contact, email_id))]:
        await assert_refused(web, kind, token, gif)
    # a genuinely signed token naming no contact of the workspace is refused too
    await assert_refused(web, "u", unsubscribe_token(eng.vault.token_key, ws, "con_not_a_contact", email_id), gif)
    assert await last_position(eng) == before
    assert (await eng.get_contact(ws, contact))["unsubscribed"] is False
