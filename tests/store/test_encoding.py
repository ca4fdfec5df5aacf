"""The append's fast encoders give exactly what the plain definitions give."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.service.base import new_id
from events import catalog  # noqa: F401
from events.catalog.contact import ContactCreated, ListCreated
from events.catalog.email import EmailScheduled
from events.chain import GENESIS, ChainHasher, event_hash
from events.registry import (
    IntegerOutOfRange,
    all_types,
    dumps,
    encode_data,
    format_time,
    from_data,
    from_owned_data,
    loads,
    parse_time,
    to_data,
)

text = st.text(max_size=40)


@given(prev=st.one_of(st.just(GENESIS), st.text(min_size=0, max_size=70)), stream=text, version=st.integers(1, 10**9),
       type_name=text, type_version=st.integers(1, 99), data=st.text(max_size=300), metadata=text,
       recorded_at=text, workspace=text, other_ws=text, key=st.one_of(st.none(), st.binary(min_size=32, max_size=32)))
def test_chain_hasher_equals_event_hash(prev: str, stream: str, version: int, type_name: str, type_version: int,
                                        data: str, metadata: str, recorded_at: str, workspace: str, other_ws: str,
                                        key: bytes | None) -> None:
    hasher = ChainHasher(metadata=metadata, recorded_at=recorded_at, workspace_id=workspace, key=key)
    common = dict(stream=stream, version=version, type_name=type_name, type_version=type_version, data=data,
                  metadata=metadata, recorded_at=recorded_at, key=key)
    fast = hasher(prev, hasher.stream_part(stream), version, type_name, type_version, data)
    assert fast == event_hash(prev, workspace_id=workspace, **common)  # type: ignore[arg-type]
    tail = hasher.tail_for(metadata=metadata, recorded_at=recorded_at, workspace_id=other_ws)
    fast_other = hasher(prev, hasher.stream_part(stream), version, type_name, type_version, data, tail)
    assert fast_other == event_hash(prev, workspace_id=other_ws, **common)  # type: ignore[arg-type]


def _plain(ev: object) -> str:
    return json.dumps(to_data(ev), separators=(",", ":"), sort_keys=True, ensure_ascii=False)  # type: ignore[arg-type]


@given(due=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
       sender=st.one_of(st.none(), text), seq=st.integers(0, 2**40))
def test_encode_data_equals_json_of_to_data_and_round_trips(due: datetime, sender: str | None, seq: int) -> None:
    ev = EmailScheduled(enrollment_id="enr_1", campaign_id="cmp_1", contact_id="con_1", email_id="enr_1.1", step=1,
                        due_at=due, sender_id=sender, priority=0, seq=seq)
    encoded = encode_data(ev)
    assert encoded == _plain(ev)
    back = from_data(ev.TYPE, ev.VERSION, json.loads(encoded))
    assert back == EmailScheduled(**{**to_data(ev), "due_at": due.astimezone(UTC)})  # type: ignore[arg-type]


def test_encode_data_sorts_nested_keys_and_keeps_unicode() -> None:
    ev = ContactCreated(contact_id="con_1", email="zoë@example.com", email_hash="h", email_domain="example.com",
                        first_name="Zoë", last_name=None, company=None, timezone=None,
                        custom_fields={"b": 1, "a": {"y": 2, "x": [3]}})
    assert encode_data(ev) == _plain(ev)
    assert '"a":{"x":[3],"y":2},"b":1' in encode_data(ev) and "Zoë" in encode_data(ev)


def test_time_format_round_trips_and_normalises_offsets() -> None:
    t = datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(t) == "2026-03-28T23:30:00.000005Z"
    assert parse_time(format_time(t)) == t and parse_time(format_time(t)).tzinfo is UTC
    assert parse_time("2026-03-29T01:30:00.000005+02:00") == t


def test_new_ids_are_prefixed_ordered_by_engine_time_and_unique() -> None:
    now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    ids = [new_id("enr", now) for _ in range(5000)]  # one frozen ManualClock moment
    assert all(re.fullmatch(r"enr_[0-9a-f]{28}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert {i[4:16] for i in ids} == {f"{int(now.timestamp() * 1000):012x}"}  # the engine clock's millisecond
    descents = sum(a > b for a, b in zip(ids, ids[1:], strict=False))
    assert descents <= 1  # in creation order (the 24-bit sequence may wrap once)
    later = new_id("enr", now + timedelta(milliseconds=1))
    assert later[4:16] > ids[0][4:16]


@given(st.text(), st.integers(), st.one_of(st.none(), st.text()))
@example(name="", seq=-(2**63) - 1, sender=None)  # once read back as the float -9.223372036854776e18
@example(name="", seq=2**64, sender=None)
@example(name="", seq=-(2**63), sender=None)
@example(name="", seq=2**64 - 1, sender=None)
def test_plain_events_encode_like_the_standard_library(name: str, seq: int, sender: str | None) -> None:
    """Plain events go through orjson: any text, the same text; any integer the log reads back
    exactly (-2^63 .. 2^64 - 1) round-trips, and one beyond is refused at encoding, naming the field."""
    events = [ListCreated(list_id="lst_1", name=name),
              EmailScheduled(enrollment_id="enr_1", campaign_id="cmp_1", contact_id="con_1", email_id=name, step=1,
                             due_at=datetime(2026, 1, 5, tzinfo=UTC), sender_id=sender, priority=0, seq=seq)]
    if not -(2**63) <= seq <= 2**64 - 1:
        with pytest.raises(IntegerOutOfRange, match=rf"email\.scheduled\.seq is {seq}, outside"):
            encode_data(events.pop())
    for ev in events:
        assert encode_data(ev) == _plain(ev)
        assert from_data(ev.TYPE, ev.VERSION, loads(encode_data(ev))) == ev


@pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, 10**30])
def test_an_integer_the_log_cannot_read_back_is_refused_in_any_payload(number: int) -> None:
    """Given a free-form payload (custom fields, metadata) holding an integer beyond 64 bits; when it
    is encoded for the log; then IntegerOutOfRange names where it is, instead of a float on read."""
    contact = ContactCreated(contact_id="con_1", email="a@example.com", email_hash="h", email_domain="example.com",
                             first_name=None, last_name=None, company=None, timezone=None,
                             custom_fields={"plan": "gold", "seats": [1, number]})
    with pytest.raises(IntegerOutOfRange, match=r"contact\.created\.custom_fields\.seats\.1 is"):
        encode_data(contact)
    with pytest.raises(IntegerOutOfRange, match=r"value\.trace\.depth is"):
        dumps({"trace": {"depth": number}})
    assert loads(dumps({"n": 2**64 - 1, "m": -(2**63)})) == {"n": 2**64 - 1, "m": -(2**63)}


def test_non_finite_floats_survive_the_log_json() -> None:
    """The standard library writes ``Infinity`` where orjson would write ``null``: such a value is
    written and read back by the standard library, never silently turned into null."""
    text = dumps({"rate": float("inf"), "n": 1})
    assert text == '{"n":1,"rate":Infinity}' and loads(text) == {"n": 1, "rate": float("inf")}


def _field_strategy(hint: object) -> st.SearchStrategy[Any]:
    """JSON-faithful values for an event field's type (aware UTC datetimes, finite floats)."""
    text_ = str(hint)
    if "datetime" in text_:
        value: st.SearchStrategy[Any] = st.datetimes(timezones=st.just(UTC))
    elif "dict" in text_ or "Any" in text_:
        value = st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3)
    elif "tuple" in text_:
        value = st.lists(st.text(max_size=8), max_size=3).map(tuple)
    elif "float" in text_:
        value = st.floats(allow_nan=False, allow_infinity=False)
    elif "bool" in text_:
        value = st.booleans()
    elif "int" in text_:
        value = st.integers(-(2**40), 2**40)
    else:
        value = st.text(max_size=12)
    return st.one_of(st.none(), value) if "None" in text_ else value


@given(st.data())
def test_every_event_type_reads_back_as_it_was_written(data: st.DataObject) -> None:
    """For every registered type: stored payload -> event (the fast constructor) equals the event,
    and equals what the dataclass's own __init__ builds from the same payload."""
    for type_name, cls in sorted(all_types().items()):
        if type_name.startswith("test."):
            continue
        hints = typing.get_type_hints(cls)
        ev = data.draw(st.builds(cls, **{f.name: _field_strategy(hints[f.name]) for f in dataclasses.fields(cls)}))
        payload = json.loads(json.dumps(to_data(ev)))
        assert from_owned_data(cls, cls.VERSION, dict(payload)) == ev, type_name
        assert from_data(type_name, cls.VERSION, payload) == ev, type_name


def test_payload_missing_a_field_with_a_default_still_reads() -> None:
    """Written before a field with a default existed: the dataclass fills it in."""
    back = from_data("email.scheduled", 1, {"enrollment_id": "enr_1", "campaign_id": "c", "contact_id": "x",
                                            "email_id": "e", "step": 1, "due_at": "2026-01-05T08:00:00.000000Z",
                                            "sender_id": None})
    assert isinstance(back, EmailScheduled) and (back.priority, back.seq) == (0, 0)
