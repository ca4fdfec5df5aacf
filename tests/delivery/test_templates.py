"""Merge tags: found, validated and substituted by a regex; never evaluated; headers stay one line."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.delivery.content.templates import (
    find_tags,
    parse_template,
    render,
    render_header,
    strip_controls,
    validate_template,
)

CONTACT: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.test",
    "company": "Analytical & <Engines>",
    "custom_fields": {"plan": "Pro", "Job_Title": "Countess"},
}


def test_find_tags_with_whitespace_and_fallbacks() -> None:
    text = "Hi {{first_name}}, {{ last_name }} from {{company|your team}} ({{ custom.plan | free }})"
    tags = find_tags(text)
    assert [(t.field, t.fallback) for t in tags] == [
        ("first_name", None),
        ("last_name", None),
        ("company", "your team"),
        ("custom.plan", "free"),
    ]
    assert all(text[t.start : t.end] == t.raw for t in tags)
    assert tags[3].custom_key == "plan"
    assert all(t.known for t in tags)


def test_find_tags_reports_unknown_ones_too() -> None:
    [tag] = find_tags("{{ frist_name }}")
    assert tag.field == "frist_name"
    assert not tag.known


def test_validate_accepts_known_tags_and_css_braces() -> None:
    html = "<style>p { color: red }</style><p>{{first_name|there}} {{email}} {{custom.job-title}}</p>"
    assert validate_template(html) == []


def test_validate_reports_unknown_and_empty_tags() -> None:
    problems = validate_template("{{frist_name}} {{ }} {{custom.}} {{first_name.x}}")
    assert len(problems) == 4
    assert "unknown merge tag '{{frist_name}}'" in problems
    assert any("empty merge tag" in p for p in problems)


def test_validate_reports_unbalanced_braces() -> None:
    assert any("never closed" in p for p in validate_template("Hi {{first_name"))
    assert any("no opening" in p for p in validate_template("Hi first_name}}"))
    assert validate_template("{{ {{first_name}}") != []
    assert validate_template("{{first_name}} }}") != []


def test_render_text_and_html() -> None:
    template = "Hi {{first_name}} at {{ company }}"
    assert render(template, CONTACT, html=False) == "Hi Ada at Analytical & <Engines>"
    assert render(template, CONTACT, html=True) == "Hi Ada at Analytical &amp; &lt;Engines&gt;"


def test_missing_or_blank_values_use_the_fallback_or_nothing() -> None:
    contact = {"first_name": "  ", "last_name": None, "email": "x@y.z"}
    assert render("Hi {{first_name|there}}!", contact, html=False) == "Hi there!"
    assert render("Hi {{ last_name | friend of ours }}!", contact, html=False) == "Hi friend of ours!"
    assert render("Hi {{company}}!", contact, html=False) == "Hi !"
    assert render("{{custom.plan|free}}", contact, html=False) == "free"


def test_fallback_is_template_text_and_not_escaped_again() -> None:
    assert render("{{company|you &amp; yours}}", {}, html=True) == "you &amp; yours"


def test_custom_fields_exact_then_case_insensitive() -> None:
    assert render("{{custom.plan}} {{custom.job_title}}", CONTACT, html=False) == "Pro Countess"
    assert render("{{custom.plan}}", {"custom": {"plan": 3}}, html=False) == "3"
    assert render("{{custom.missing|-}}", CONTACT, html=False) == "-"


def test_unknown_tags_are_left_alone_and_nothing_is_evaluated() -> None:
    text = "{{ __import__('os').system('x') }} {{frist_name}} {{first_name}}"
    assert render(text, CONTACT, html=False) == "{{ __import__('os').system('x') }} {{frist_name}} Ada"


def test_substitution_is_single_pass() -> None:
    contact = {"first_name": "{{email}}", "email": "secret@example.test"}
    assert render("{{first_name}}", contact, html=False) == "{{email}}"


def test_camel_case_aliases_and_unsubscribe_url_are_known() -> None:
    text = "{{firstName}} {{ lastName }} of {{companyName|you}}: {{unsubscribe_url}}"
    assert validate_template(text) == []
    contact = {**CONTACT, "unsubscribe_url": "https://t.example.test/u/abc"}
    assert render(text, contact, html=False) == (
        "Ada Lovelace of Analytical & <Engines>: https://t.example.test/u/abc")
    assert render("{{companyName|you}} {{unsubscribe_url}}", {}, html=False) == "you "
    assert validate_template("{{FirstName}} {{first-name}}") != []


def test_values_inside_urls_are_percent_encoded() -> None:
    contact = {"company": "AT&T <b>", "first_name": "Zoë", "email": "ann+x@corp.test"}
    html = render('<a href="https://x.test/?c={{company}}&n={{first_name}}">{{company}}</a>', contact, html=True)
    assert html == '<a href="https://x.test/?c=AT%26T%20%3Cb%3E&n=Zo%C3%AB">AT&amp;T &lt;b&gt;</a>'
    single = render("<a href='https://x.test/{{company}}'>x</a> <a href=https://x.test/{{company}}>y</a>",
                    contact, html=True)
    assert single == "<a href='https://x.test/AT%26T%20%3Cb%3E'>x</a> <a href=https://x.test/AT%26T%20%3Cb%3E>y</a>"
    text = render("Go to https://x.test/?c={{company}}. Thanks, {{company}}", contact, html=False)
    assert text == "Go to https://x.test/?c=AT%26T%20%3Cb%3E. Thanks, AT&T <b>"
    assert render('<img src="https://img.test/{{ company | a b }}.png">', {}, html=True) == (
        '<img src="https://img.test/a%20b.png">')
    assert render('<a href="mailto:{{email}}?subject=Hi%20{{first_name}}">', contact, html=True) == (
        '<a href="mailto:ann%2Bx@corp.test?subject=Hi%20Zo%C3%AB">')


def test_a_tag_that_starts_an_href_is_the_url_itself() -> None:
    contact = {"custom_fields": {"link": "https://x.test/?a=1&b=2"}, "unsubscribe_url": "https://t.test/u/tok"}
    assert render('<a href="{{custom.link}}">x</a>', contact, html=True) == '<a href="https://x.test/?a=1&amp;b=2">x</a>'
    assert render('<a href=" {{unsubscribe_url}}">', contact, html=True) == '<a href=" https://t.test/u/tok">'
    assert render("Book: {{custom.link}}", contact, html=False) == "Book: https://x.test/?a=1&b=2"
    assert render("Leave: https://t.test/?next={{unsubscribe_url}}", contact, html=False) == (
        "Leave: https://t.test/?next=https%3A%2F%2Ft.test%2Fu%2Ftok")


def test_templates_are_parsed_once_per_text() -> None:
    text = "<p>Hi {{first_name}} {{frist_name}}</p><a href='https://x.test/{{company}}'>x</a>"
    assert parse_template(text) is parse_template(text)
    before = parse_template.cache_info().hits
    for _ in range(3):
        render(text, CONTACT, html=True)
    assert parse_template.cache_info().hits == before + 3
    assert render(text, CONTACT, html=True) == (
        "<p>Hi Ada {{frist_name}}</p><a href='https://x.test/Analytical%20%26%20%3CEngines%3E'>x</a>")


def test_render_header_strips_every_control_character() -> None:
    contact = {"first_name": "X\r\nBcc: a@b.c"}
    assert render_header("Hi {{first_name}}", contact) == "Hi XBcc: a@b.c"
    assert render_header("Tab\there\x00\x7f\x85\u2028 {{first_name}}\n", contact) == "Tabhere XBcc: a@b.c"


@given(
    st.text(),
    st.dictionaries(st.sampled_from(["first_name", "last_name", "email", "company"]), st.one_of(st.none(), st.text())),
)
def test_render_header_never_lets_a_control_character_through(template: str, contact: dict[str, Any]) -> None:
    value = render_header(template, contact)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F or 0x80 <= ord(c) <= 0x9F for c in value)
    assert "\u2028" not in value and "\u2029" not in value


@given(st.text(), st.text())
def test_html_render_escapes_any_value(prefix: str, name: str) -> None:
    out = render("<p>{{first_name}}</p>", {"first_name": prefix + "<script>" + name}, html=True)
    assert "<script>" not in out[3:-4]


@given(st.text())
def test_strip_controls_is_idempotent(value: str) -> None:
    once = strip_controls(value)
    assert strip_controls(once) == once
    assert not any(ord(c) < 0x20 for c in once)


@given(st.text(), st.text())
def test_url_values_never_break_out_of_the_url(template_tail: str, value: str) -> None:
    out = render('<a href="https://x.test/?q={{company}}">' + template_tail.replace("{", ""),
                 {"company": value}, html=True)
    href = out[len('<a href="') : out.index('"', len('<a href="'))]
    assert all(ch.isascii() and (ch.isalnum() or ch in "%-._~@") for ch in href[len("https://x.test/?q="):])


@given(st.text())
def test_render_never_raises(template: str) -> None:
    render(template, CONTACT, html=True)
    validate_template(template)
