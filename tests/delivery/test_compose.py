"""One compose path: subjects, text links, URL values, IDN, test sends, and agreement with preview and tick."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from engine.delivery.content.compose import (
    TEST_CONTACT_ID,
    ComposedEmail,
    compose_email,
    merge_data,
    render_step,
    subject_template,
)
from engine.delivery.content.mime import Tracking, message_id_for
from engine.delivery.content.tokens import read_click, read_unsubscribe
from tests.delivery.smtp_server import SmtpSink

SECRET = b"s" * 32
NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
PUBLIC = "https://t.example.test"
WIKI = "https://en.wikipedia.org/wiki/Foo_(bar)"
CONTACT: dict[str, Any] = {
    "first_name": "Ann", "last_name": "Lee", "email": "ann@corp.test", "company": "Corp One",
    "custom_fields": '{"plan": "Pro"}',
}
SENDER: dict[str, Any] = {"email": "rep@sales.test", "from_name": "Rep"}
DEFINITION: dict[str, Any] = {
    "steps": [
        {"subject": "Hi {{first_name|there}} at {{company}}", "body_html": "<p>Hello {{firstName}}</p>",
         "body_text": None, "same_thread": True},
        {"subject": "", "body_html": "<p>Bump</p>", "same_thread": True},
        {"subject": "Re: Hi {{first_name|there}}", "body_html": "<p>Last one</p>", "same_thread": True},
        {"subject": "  ", "body_html": "<p>New thread</p>", "same_thread": False},
    ],
    "settings": {"track_clicks": True, "unsubscribe_link": True},
}


def tracking(**overrides: Any) -> Tracking:
    values: dict[str, Any] = {"public_url": PUBLIC, "secret": SECRET, "email_id": "enr_1.1", "clicks": True,
                              "unsubscribe": True, "workspace_id": "ws_1", "contact_id": "con_1"}
    values.update(overrides)
    return Tracking(**values)


def compose(step: int = 1, definition: dict[str, Any] | None = None, contact: dict[str, Any] | None = None,
            **overrides: Any) -> ComposedEmail:
    values: dict[str, Any] = {"enrollment_id": "enr_1", "email_id": f"enr_1.{step}",
                              "message_id": message_id_for("enr_1", step, "sales.test"), "now": NOW,
                              "tracking": tracking(email_id=f"enr_1.{step}")}
    values.update(overrides)
    return compose_email(definition or DEFINITION, step, contact or CONTACT, SENDER, **values)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_and_html(raw: bytes) -> tuple[str, str]:
    text, html = (part.get_content().replace("\r\n", "\n") for part in parse(raw).iter_parts())
    return text, html


def one_step(body_html: str, body_text: str | None = None) -> dict[str, Any]:
    return {"steps": [{"subject": "s", "body_html": body_html, "body_text": body_text}], "settings": {}}


# -- subjects and threading ------------------------------------------------------------------------
def test_blank_follow_up_is_re_first_subject_and_own_subject_is_kept() -> None:
    first, blank, own, unthreaded = (compose(step) for step in (1, 2, 3, 4))
    assert first.subject == "Hi Ann at Corp One"
    assert blank.subject == "Re: Hi Ann at Corp One"
    assert own.subject == "Re: Hi Ann"
    assert unthreaded.subject == ""
    messages = [parse(email.raw) for email in (first, blank, own, unthreaded)]
    assert [str(m["Subject"]) for m in messages[:3]] == [first.subject, blank.subject, own.subject]
    ids = [message_id_for("enr_1", step, "sales.test") for step in (1, 2, 3)]
    assert "In-Reply-To" not in messages[0]
    assert messages[1]["In-Reply-To"] == ids[0] and messages[1]["References"].split() == ids[:1]
    assert messages[2]["In-Reply-To"] == ids[1] and messages[2]["References"].split() == ids[:2]
    assert "In-Reply-To" not in messages[3] and "References" not in messages[3]


def test_preview_test_send_and_real_send_show_the_same_subject() -> None:
    for step in (1, 2, 3):
        shown = render_step(DEFINITION, step, CONTACT).subject
        sent = compose(step)
        test = compose(step, enrollment_id="test-1", email_id=f"test-1.{step}", test=True, to_email="qa@x.test",
                       message_id=message_id_for("test-1", step, "sales.test"))
        assert sent.subject == shown
        assert test.subject == "[TEST] " + shown == str(parse(test.raw)["Subject"])


def test_subject_template_for_reports() -> None:
    assert [subject_template(DEFINITION, step) for step in (1, 2, 3, 4)] == [
        "Hi {{first_name|there}} at {{company}}", "Re: Hi {{first_name|there}} at {{company}}",
        "Re: Hi {{first_name|there}}", "  "]


def test_no_enrollment_no_threading_headers() -> None:
    message = parse(compose(2, enrollment_id=None).raw)
    assert "In-Reply-To" not in message and str(message["Subject"]) == "Re: Hi Ann at Corp One"


def test_missing_step_is_refused() -> None:
    with pytest.raises(ValueError):
        compose(5)
    with pytest.raises(ValueError):
        render_step({"steps": []}, 1, CONTACT)


# -- bodies ------------------------------------------------------------------------------------------
def test_text_part_is_the_steps_own_or_made_from_html_as_preview_shows() -> None:
    definition = {"steps": [{"subject": "s", "body_html": "<p>Hi {{first_name}}</p>", "body_text": None},
                            {"subject": "s", "body_html": "<p>x</p>", "body_text": "Plain {{custom.plan}}"}]}
    for step, expected in ((1, "Hi Ann"), (2, "Plain Pro")):
        rendered = render_step(definition, step, CONTACT)
        email = compose(step, definition, tracking=None)
        assert rendered.body_text == email.body_text == expected
        assert text_and_html(email.raw) == (expected, rendered.body_html)


def test_text_links_with_parentheses_are_tracked_whole() -> None:
    email = compose(definition=one_step("<p>x</p>", f"Read {WIKI} (or {WIKI}).\nSee (https://x.test/a)."))
    assert email.links == (WIKI, "https://x.test/a")
    text, _ = text_and_html(email.raw)
    assert WIKI not in text and "(bar)" not in text
    click = r"https://t\.example\.test/t/c/[\w.\-]+"
    assert re.fullmatch(rf"Read {click} \(or {click}\)\.\nSee \({click}\)\.", text)


def test_merge_values_in_urls_are_percent_encoded_and_the_link_works() -> None:
    contact = {**CONTACT, "company": "AT&T <b>"}
    definition = one_step('<p><a href="https://x.test/?c={{company}}">{{company}}</a></p>',
                          "Go to https://x.test/t?c={{companyName}} now, {{company}}")
    plain = compose(definition=definition, contact=contact, tracking=None)
    text, html = text_and_html(plain.raw)
    assert html == '<p><a href="https://x.test/?c=AT%26T%20%3Cb%3E">AT&amp;T &lt;b&gt;</a></p>'
    assert text == "Go to https://x.test/t?c=AT%26T%20%3Cb%3E now, AT&T <b>"
    tracked = compose(definition=definition, contact=contact)
    assert tracked.links == ("https://x.test/?c=AT%26T%20%3Cb%3E", "https://x.test/t?c=AT%26T%20%3Cb%3E")
    _, html = text_and_html(tracked.raw)
    token = re.findall(r'href="https://t\.example\.test/t/c/([^"]+)"', html)
    click = read_click(SECRET, token[0])
    assert click is not None and tracked.links[click.link_index] == "https://x.test/?c=AT%26T%20%3Cb%3E"


def test_a_link_already_to_our_click_tracker_is_not_wrapped_again() -> None:
    ours = f"{PUBLIC}/t/c/abc.def"
    email = compose(definition=one_step(f'<a href="{ours}">a</a> <a href="https://x.test/">b</a>', f"{ours}"))
    assert email.links == ("https://x.test/",)
    text, html = text_and_html(email.raw)
    assert f'href="{ours}"' in html and text == ours


def test_unsubscribe_url_tag_is_the_list_unsubscribe_page_and_not_tracked() -> None:
    definition = one_step('<a href="{{unsubscribe_url}}">Unsubscribe</a>', "Out: {{unsubscribe_url}}")
    email = compose(definition=definition)
    message = parse(email.raw)
    url = re.findall(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))[0]
    text, html = text_and_html(email.raw)
    assert html == f'<a href="{url}">Unsubscribe</a>' and text == f"Out: {url}"
    assert email.links == ()
    token = read_unsubscribe(SECRET, url.rsplit("/", 1)[1])
    assert token is not None and (token.workspace_id, token.contact_id, token.email_id) == ("ws_1", "con_1", "enr_1.1")
    assert render_step(definition, 1, CONTACT).body_text == "Out: "  # preview without a contact: empty


def test_email_id_replaces_the_trackings() -> None:
    email = compose(tracking=tracking(email_id="placeholder"), email_id="enr_1.1",
                    definition=one_step('<a href="https://x.test/">x</a>'))
    _, html = text_and_html(email.raw)
    click = read_click(SECRET, re.findall(r"/t/c/([^\"]+)", html)[0])
    assert click is not None and click.email_id == "enr_1.1"


# -- addresses and headers ------------------------------------------------------------------------------
def test_idn_contact_gets_a_labels_in_to_and_rcpt() -> None:
    email = compose(contact={**CONTACT, "email": "mueller@bücher.de"})
    assert parse(email.raw)["To"].addresses[0].addr_spec == "mueller@xn--bcher-kva.de"
    assert email.recipient == "mueller@xn--bcher-kva.de"
    assert compose(contact={**CONTACT, "email": "müller@bücher.de"}).recipient == "müller@bücher.de"
    assert compose().recipient == "ann@corp.test"


def test_contact_data_cannot_add_a_header() -> None:
    contact = {**CONTACT, "first_name": "X\r\nBcc: a@b.c", "last_name": None}
    definition = {"steps": [{"subject": "Hi {{first_name}}", "body_html": "x"}]}
    message = parse(compose(definition=definition, contact=contact).raw)
    assert "Bcc" not in message
    assert str(message["Subject"]) == "Hi XBcc: a@b.c"
    assert message["To"].addresses[0].display_name == "XBcc: a@b.c"


def test_merge_data_accepts_rows_as_stored() -> None:
    assert merge_data({"custom_fields": '{"a": 1}'})["custom_fields"] == {"a": 1}
    assert merge_data({"custom_fields": None})["custom_fields"] == {}
    assert merge_data({"custom_fields": "not json"})["custom_fields"] == {}
    assert merge_data({"custom_fields": "[1]"})["custom_fields"] == {}
    assert render_step(one_step("{{custom.plan}} {{lastName}}"), 1, CONTACT).body_html == "Pro Lee"


# -- test sends -------------------------------------------------------------------------------------------
def test_test_send_has_list_unsubscribe_but_no_open_or_click_tracking() -> None:
    test_tracking = tracking(email_id="test-1.1", opens=True, contact_id=TEST_CONTACT_ID)
    email = compose(definition=one_step('<p><a href="https://x.test/">x</a></p>'), tracking=test_tracking, test=True,
                    to_email="qa@x.test", enrollment_id="test-1", email_id="test-1.1",
                    message_id=message_id_for("test-1", 1, "sales.test"))
    message = parse(email.raw)
    assert message["To"].addresses[0].addr_spec == "qa@x.test" and message["To"].addresses[0].display_name == ""
    assert email.recipient == "qa@x.test" and email.links == ()
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.findall(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))[0]
    token = read_unsubscribe(SECRET, url.rsplit("/", 1)[1])
    assert token is not None and token.contact_id == TEST_CONTACT_ID
    _, html = text_and_html(email.raw)
    assert html == '<p><a href="https://x.test/">x</a></p>'
    off = compose(tracking=tracking(unsubscribe=False), test=True, to_email="qa@x.test")
    assert "List-Unsubscribe" not in parse(off.raw)


# -- preview, test_send and tick agree, through the engine ------------------------------------------------
ALWAYS = {"timezone": "UTC", "start_time": "00:00", "end_time": "24:00", "every_minutes": 1}
FIRST: dict[str, Any] = {"subject": "Hi {{first_name|there}} at {{company}}",
         "body_html": '<p><a href="https://x.test/?c={{company}}">x</a> <a href="' + WIKI + '">w</a></p>'}


async def setup(eng: CampaignEngine, sink: SmtpSink, steps: list[dict[str, Any]]) -> tuple[str, str, str]:
    ws = (await eng.create_workspace("acme", monthly_limit=1000)).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 100, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    con = (await eng.create_contact(ws, {"email": "ann@bücher.de", "first_name": "Ann", "company": "Corp One"}))["id"]
    cid = (await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": steps, "schedule": ALWAYS,
                                          "settings": {"track_clicks": True, "unsubscribe_link": True}}))["id"]
    await eng.enroll(ws, cid, {"contact_ids": [con]})
    return ws, cid, con


async def test_preview_and_test_send_agree_and_test_unsubscribe_is_harmless(sqlite_url: str,
                                                                             clock: ManualClock) -> None:
    steps: list[dict[str, Any]] = [
        FIRST, {"subject": "", "body_html": "<p>Bump {{unsubscribe_url}}</p>", "delay": {"minutes": 5}},
        {"subject": "Re: Hi {{first_name|there}}", "body_html": "<p>Last</p>", "delay": {"minutes": 5}}]
    async with CampaignEngine(sqlite_url, clock=clock, secret_key="k" * 32, public_url=PUBLIC) as eng:
        with SmtpSink() as sink:
            ws, cid, con = await setup(eng, sink, steps)
            preview = (await eng.preview(ws, cid, con))["steps"]
            subjects = [step["subject"] for step in preview]
            assert subjects == ["Hi Ann at Corp One", "Re: Hi Ann at Corp One", "Re: Hi Ann"]
            assert f"{PUBLIC}/u/" in preview[1]["body_html"]
            sample = (await eng.preview(ws, cid))["steps"]
            assert sample[1]["body_html"] == "<p>Bump </p>"

            await eng.test_send(ws, cid, {"emails": ["qa@corp.io"], "contact_id": con})
            tests = [parse(m.data) for m in sink.messages]
            assert [str(m["Subject"]) for m in tests] == ["[TEST] " + subject for subject in subjects]
            assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in tests)
            assert tests[1]["In-Reply-To"] == tests[0]["Message-ID"]
            assert {m.rcpt_tos for m in sink.messages} == {("qa@corp.io",)}
            unsubscribe = re.findall(r"<https://t\.example\.test(/u/[^>]+)>", str(tests[1]["List-Unsubscribe"]))[0]
            _, html = text_and_html(sink.messages[1].data)
            assert f"{PUBLIC}{unsubscribe}" in html  # {{unsubscribe_url}}: the test link, not the contact's

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url=PUBLIC) as web:
                before = (await eng.list_events(ws, limit=1000))["data"]
                assert (await web.get(unsubscribe)).status_code == 404
                assert (await web.post(unsubscribe)).status_code == 404
                assert (await eng.list_events(ws, limit=1000))["data"] == before


async def test_tick_sends_what_preview_and_test_send_show(sqlite_url: str, clock: ManualClock) -> None:
    steps: list[dict[str, Any]] = [
        FIRST, {"subject": "Re: Hi {{first_name|there}}", "body_html": "<p>Bump</p>", "delay": {"minutes": 5}}]
    async with CampaignEngine(sqlite_url, clock=clock, secret_key="k" * 32, public_url=PUBLIC) as eng:
        with SmtpSink() as sink:
            ws, cid, con = await setup(eng, sink, steps)
            subjects = [step["subject"] for step in (await eng.preview(ws, cid, con))["steps"]]
            assert subjects == ["Hi Ann at Corp One", "Re: Hi Ann"]
            await eng.test_send(ws, cid, {"emails": ["qa@corp.io"], "contact_id": con})
            assert [str(parse(m.data)["Subject"]) for m in sink.messages] == ["[TEST] " + s for s in subjects]
            sink.clear()

            await eng.launch_campaign(ws, cid)
            for _ in range(30):
                if len(sink.messages) >= 2:
                    break
                await eng.tick()
                clock.advance(timedelta(minutes=1))
            sent = [parse(m.data) for m in sink.messages]
            assert [str(m["Subject"]) for m in sent] == subjects
            assert sent[1]["In-Reply-To"] == sent[0]["Message-ID"]
            assert sent[0]["To"].addresses[0].addr_spec == "ann@xn--bcher-kva.de"
