"""Link scanners: a HEAD, a script's user agent or a click on delivery is recorded, never counted.

Corporate mail gateways follow every link of a message as it arrives. These tests send a real
email through the SMTP sink, take the click URL from the received message and follow it the way
a scanner and then a person would, on a ManualClock so "seconds after delivery" is exact.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from engine import CampaignEngine, ManualClock
from engine.service.tracking import SCANNER_WINDOW, is_scanner
from tests.api.test_tracking import PRICING, READER, Links, World, engagement, events_of, launch, links_of
from tests.delivery.smtp_server import SmtpSink

PYTHON_REQUESTS = "python-requests/2.32.3"
SAFE_LINKS_PROBE = "Microsoft Office Existence Discovery"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CUBOT_PHONE = ("Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/120.0.0.0 Mobile Safari/537.36")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")


async def send_one(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> Links:
    """Tick until the message is in the sink, leaving the clock at the moment it was sent."""
    for _ in range(5):
        await eng.tick()
        if sink.messages:
            break
        clock.advance(timedelta(minutes=1))
    [message] = sink.messages
    return links_of(message.data)


async def counted_clicks(eng: CampaignEngine, w: World) -> tuple[int, int]:
    """(unique ``engagement.clicked``, total ``stats/links`` clicks)."""
    links = await eng.campaign_link_stats(w.ws, w.cid)
    return (await engagement(eng, w))["clicked"], sum(item["clicks"] for item in links)


async def test_scanner_clicks_redirect_but_count_nothing_then_a_person_counts(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, web: httpx.AsyncClient) -> None:
    w = await launch(eng, sink, contacts=1)
    links = await send_one(eng, clock, sink)
    link = links.clicks[0]

    clock.advance(timedelta(seconds=2))  # a gateway's scan on delivery, with a browser's user agent
    scans = [await web.get(link, headers={"User-Agent": CHROME})]
    clock.advance(timedelta(minutes=5))  # the rest are late enough: only the request marks them
    scans.append(await web.head(link, headers={"User-Agent": CHROME}))
    scans.append(await web.get(link, headers={"User-Agent": PYTHON_REQUESTS}))
    scans.append(await web.get(link, headers={"User-Agent": SAFE_LINKS_PROBE}))
    scans.append(await web.get(link, headers={"User-Agent": GOOGLEBOT}))
    scans.append(await web.get(link, headers={"User-Agent": ""}))
    for response in scans:  # every scanner still learns the real destination
        assert response.status_code == 302 and response.headers["location"] == PRICING
        assert response.headers["referrer-policy"] == "no-referrer"
    assert await counted_clicks(eng, w) == (0, 0)
    assert await engagement(eng, w) == {"opened": 0, "clicked": 0, "replied": 0, "unsubscribed": 0,
                                        "out_of_office": 0, "opens_total": 0}
    assert await events_of(eng, w.ws, "email.opened") == []  # a scan implies no open either
    clicked = await events_of(eng, w.ws, "email.clicked")
    assert len(clicked) == len(scans) and all(e["data"]["prefetch"] is True for e in clicked)
    assert clicked[2]["data"]["user_agent"] == PYTHON_REQUESTS

    clock.advance(timedelta(minutes=1))  # a person, minutes after delivery
    response = await web.get(link, headers={"User-Agent": READER})
    assert response.status_code == 302 and response.headers["location"] == PRICING
    assert await counted_clicks(eng, w) == (1, 1)
    stats = await engagement(eng, w)
    assert stats["clicked"] == 1 and stats["opened"] == 1  # the person's click implied the open
    assert await eng.campaign_link_stats(w.ws, w.cid) == [{"url": PRICING, "clicks": 1, "unique_clicks": 1}]
    assert (await events_of(eng, w.ws, "email.clicked"))[-1]["data"]["prefetch"] is False


@pytest.mark.parametrize("after, counted", [(SCANNER_WINDOW - timedelta(seconds=1), False), (SCANNER_WINDOW, True)])
async def test_the_delivery_window_is_on_the_engine_clock(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, web: httpx.AsyncClient,
        after: timedelta, counted: bool) -> None:
    w = await launch(eng, sink, contacts=1)
    links = await send_one(eng, clock, sink)
    clock.advance(after)
    response = await web.get(links.clicks[1], headers={"User-Agent": CHROME})
    assert response.status_code == 302
    assert await counted_clicks(eng, w) == ((1, 1) if counted else (0, 0))


async def test_head_of_a_bad_token_is_404_like_get(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink,
                                                  web: httpx.AsyncClient) -> None:
    await launch(eng, sink, contacts=1)
    links = await send_one(eng, clock, sink)
    forged = links.clicks[0][:-3] + ("AAA" if not links.clicks[0].endswith("AAA") else "BBB")
    assert (await web.head(forged)).status_code == 404
    assert (await web.get(forged, headers={"User-Agent": READER})).status_code == 404


def test_scanner_user_agents_are_conservative() -> None:
    for automated in (PYTHON_REQUESTS, "curl/8.5.0", "Go-http-client/1.1", "Java/1.8.0_371", "okhttp/4.12.0",
                      "Wget/1.21.4", "libwww-perl/6.72", "Mimecast-URL-Protect", SAFE_LINKS_PROBE, GOOGLEBOT,
                      "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Barracuda Sentinel",
                      "Mozilla/5.0 (compatible; Proofpoint URL Defense)", None, "  "):
        assert is_scanner(automated), automated
    for person in (READER, CHROME, CUBOT_PHONE,
                   "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                   "Version/17.4 Mobile/15E148 Safari/604.1",
                   "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"):
        assert not is_scanner(person), person
