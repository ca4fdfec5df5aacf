"""Signed tracking tokens: ids only, compact, URL-safe, and worthless when forged or altered."""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.delivery.content.tokens import (
    ClickToken,
    OpenToken,
    UnsubscribeToken,
    click_token,
    open_token,
    read_click,
    read_open,
    read_unsubscribe,
    sign,
    unsubscribe_token,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef"
URL_SAFE = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\Z")


def test_round_trip_of_each_kind() -> None:
    assert read_open(SECRET, open_token(SECRET, "enr_1.2")) == OpenToken("enr_1.2")
    assert read_click(SECRET, click_token(SECRET, "enr_1.2", 3)) == ClickToken("enr_1.2", 3)
    token = unsubscribe_token(SECRET, "ws_1", "con_9", "enr_1.2")
    assert read_unsubscribe(SECRET, token) == UnsubscribeToken("ws_1", "con_9", "enr_1.2")


def test_tokens_are_compact_url_safe_and_deterministic() -> None:
    token = click_token(SECRET, "enr_01HX5Q7Z3M4N5P6Q7R8S9T0V1W.2", 12)
    assert URL_SAFE.match(token)
    assert len(token) < 100
    assert token == click_token(SECRET, "enr_01HX5Q7Z3M4N5P6Q7R8S9T0V1W.2", 12)


def test_payload_holds_ids_only() -> None:
    body = open_token(SECRET, "enr_1.2").split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert decoded == {"e": "enr_1.2"}


def test_wrong_kind_is_refused() -> None:
    token = open_token(SECRET, "enr_1.2")
    assert verify(SECRET, "o", token) == {"e": "enr_1.2"}
    assert verify(SECRET, "c", token) is None
    assert verify(SECRET, "u", token) is None
    assert read_click(SECRET, token) is None


def test_other_secret_is_refused() -> None:
    assert read_open(b"another secret", open_token(SECRET, "enr_1.2")) is None


def test_altered_payload_with_the_old_mac_is_refused() -> None:
    token = click_token(SECRET, "enr_1.2", 0)
    _, mac = token.split(".")
    forged_body = base64.urlsafe_b64encode(b'{"e":"enr_1.2","i":1}').rstrip(b"=").decode()
    assert read_click(SECRET, f"{forged_body}.{mac}") is None


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "!!!.???", "é.é", "eyJlIjoiYSJ9.AAAA", "x" * 5000],
)
def test_garbage_is_refused(garbage: str) -> None:
    assert verify(SECRET, "o", garbage) is None
    assert read_open(SECRET, garbage) is None


def test_padding_or_foreign_characters_are_refused() -> None:
    token = open_token(SECRET, "enr_1.2")
    body, mac = token.split(".")
    assert verify(SECRET, "o", f"{body}=.{mac}") is None
    assert verify(SECRET, "o", f"{body}.{mac}==") is None
    assert verify(SECRET, "o", f"{body}.{mac[:-1]}") is None


def test_typed_readers_refuse_unexpected_fields() -> None:
    extra = sign(SECRET, "o", {"e": "enr_1.2", "x": 1})
    assert verify(SECRET, "o", extra) == {"e": "enr_1.2", "x": 1}
    assert read_open(SECRET, extra) is None
    assert read_click(SECRET, sign(SECRET, "c", {"e": "enr_1.2", "i": "3"})) is None
    assert read_click(SECRET, sign(SECRET, "c", {"e": "enr_1.2", "i": -1})) is None


def test_sign_refuses_bad_input() -> None:
    with pytest.raises(TypeError):
        sign(SECRET, "o", {"e": True})
    with pytest.raises(TypeError):
        sign(SECRET, "o", {"e": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        sign(SECRET, "o-x", {"e": "1"})
    with pytest.raises(ValueError):
        sign(b"", "o", {"e": "1"})
    with pytest.raises(ValueError):
        click_token(SECRET, "enr_1.2", -1)


payloads = st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers()), max_size=4)


@given(payloads, st.sampled_from(["o", "c", "u"]))
def test_any_payload_round_trips(payload: dict[str, str | int], kind: str) -> None:
    assert verify(SECRET, kind, sign(SECRET, kind, payload)) == payload


@given(payloads, st.data())
def test_any_single_character_change_is_refused(payload: dict[str, str | int], data: st.DataObject) -> None:
    token = sign(SECRET, "c", payload)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCabc012_-."))
    altered = token[:position] + replacement + token[position + 1 :]
    if altered != token:
        assert verify(SECRET, "c", altered) is None
