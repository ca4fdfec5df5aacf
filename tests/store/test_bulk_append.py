"""What the bulk append path (issue #14's import) must keep while it got faster.

Key rows written per append through each backend's driver, personal fields encrypted per event
with shared nonces and cheaper encoders, contact.updated projected as one statement per set of
columns, the import's duplicate check kept on its index, email domains probed once per process,
and the garbage collector paused around synchronous bursts.
"""

from __future__ import annotations

import base64
import gc
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from email_validator import validate_email
from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from engine.domain.models import check_email
from engine.service import contact_import
from events import (
    catalog,  # noqa: F401  (registers the event types)
    schema,
)
from events.catalog.contact import ContactCreated, ContactUpdated, SuppressionAdded
from events.gc_pause import paused_gc
from events.registry import dumps, encode_encrypted, to_data
from events.store import AppendBatch, EventStore
from events.vault import PII_PREFIX, Vault
from projections import tables as t
from tests.conftest import SECRET, pg_database

WS = "ws_bulk"


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """The store on each backend: each writes and reads the key rows its own way."""
    clock = ManualClock(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    if request.param == "postgres":
        async with pg_database() as url:
            opened = await EventStore.open(url, Vault(b"k" * 32), clock.now)
            yield opened
            await opened.close()
        return
    url = f"sqlite+aiosqlite:///{tmp_path}/engine.db" if request.param == "sqlite" else "sqlite+aiosqlite://"
    opened = await EventStore.open(url, Vault(b"k" * 32), clock.now)
    yield opened
    await opened.close()


def created(number: int, **fields: Any) -> ContactCreated:
    values: dict[str, Any] = {"email": f"p{number}@corp.io", "first_name": f"F{number}", "last_name": None,
                              "company": "Corp", "timezone": None, "custom_fields": {"plan": "pro"}}
    values.update(fields)
    return ContactCreated(contact_id=f"con_{number}", email_hash=f"h{number}", email_domain="corp.io", **values)


async def test_one_key_row_per_subject_and_existing_keys_reused(store: EventStore) -> None:
    first = await store.append_many([AppendBatch(f"contact-con_{n}", [created(n)], 0) for n in (1, 2, 3)],
                                    workspace_id=WS)
    assert [e.event for e in first] == [created(1), created(2), created(3)]
    update = ContactUpdated(contact_id="con_1", changes={"first_name": "Ann", "custom_fields": {"plan": "free"}})
    await store.append_many([AppendBatch("contact-con_1", [update], 1),
                             AppendBatch("contact-con_4", [created(4, first_name="Zoë")], 0)], workspace_id=WS)
    async with store.reading() as conn:
        keys = (await conn.execute(select(schema.vault_keys.c.subject_id, schema.vault_keys.c.workspace_id)
                                   .order_by(schema.vault_keys.c.subject_id))).all()
    assert [tuple(row) for row in keys] == [(f"con_{n}", WS) for n in (1, 2, 3, 4)]
    async with store.transaction() as conn:
        await store.erase_subject(conn, "con_2")
    read = {e.stream: [x.event for x in await store.read_stream(e.stream)] for e in first}
    assert read["contact-con_1"] == [created(1), update]  # the update was sealed under con_1's first key
    assert read["contact-con_3"] == [created(3)]
    erased = read["contact-con_2"][0]
    assert isinstance(erased, ContactCreated) and (erased.email, erased.first_name) == (None, None)
    assert (await store.read_stream("contact-con_4"))[0].event == created(4, first_name="Zoë")


@pytest.mark.parametrize("value", [
    "ann@corp.io", "Zoë \u2028 \"quoted\" \\ back\nslash", "\ud800 lone surrogate",
    {"plan": "pro", "note": "é"}, {"score": 1.5, "big": 10**18, "ok": True, "none": None},
    {"inf": math.inf}, {"lone": "\udfff"}, ["https://corp.io/a", "https://corp.io/b"],
])
def test_encrypted_fields_read_back_and_payload_text_is_the_standard_librarys(value: Any) -> None:
    """Whatever encoder wrote a field's plaintext, decryption gives the value back; and the stored
    payload orjson writes for an encrypted event is the standard library's text, byte for byte."""
    key = Vault.new_key()
    for event in (created(1, first_name=value if isinstance(value, str) else None,
                          custom_fields=value if isinstance(value, dict) else None),
                  ContactUpdated(contact_id="con_1", changes={"custom_fields": value}),
                  SuppressionAdded(subject_id="sup_1", kind="email", value=value if isinstance(value, str) else None,
                                   value_hash="h", reason="manual")):
        data = to_data(event)
        Vault.encrypt_fields(key, data, event.PERSONAL)
        for name in event.PERSONAL:
            original = to_data(event)[name]
            assert original is None or (isinstance(data[name], str) and data[name].startswith(PII_PREFIX))
            back = Vault.decrypt_field(key, data[name])
            assert back == original or (isinstance(original, float) and math.isnan(original))
        assert encode_encrypted(type(event), data) == dumps(data)


def test_fields_of_one_event_never_share_a_nonce() -> None:
    """The fields' nonces are slices of one random read: each field gets its own 12 bytes."""
    data = to_data(created(1, first_name="Ann", last_name="Lee"))
    Vault.encrypt_fields(Vault.new_key(), data, ContactCreated.PERSONAL)
    nonces = [base64.b64decode(data[name][len(PII_PREFIX):])[:12] for name in ContactCreated.PERSONAL]
    assert len(nonces) == 5 and len(set(nonces)) == 5


async def test_contact_updates_of_one_append_land_in_log_order_and_rebuild_alike(
        sqlite_url: str, clock: ManualClock) -> None:
    """Updates changing different columns of one contact, interleaved with another's, in one append:
    the batched UPDATEs must leave each contact as the events in order would, and so must a rebuild."""
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as engine:
        ws = (await engine.create_workspace("w")).id
        first = (await engine.create_contact(ws, {"email": "a@corp.io", "first_name": "A0"}))["id"]
        other = (await engine.create_contact(ws, {"email": "b@corp.io", "first_name": "B0"}))["id"]
        await engine.store.append_many([
            AppendBatch(f"contact-{first}", [
                ContactUpdated(contact_id=first, changes={"first_name": "A1"}),
                ContactUpdated(contact_id=first, changes={"last_name": "L2", "custom_fields": {"k": "v2"}}),
                ContactUpdated(contact_id=first, changes={"first_name": "A3", "custom_fields": None}),
            ]),
            AppendBatch(f"contact-{other}", [
                ContactUpdated(contact_id=other, changes={"first_name": "B1"}),
                ContactUpdated(contact_id=other, changes={"first_name": "B2"}),
            ]),
        ], workspace_id=ws)
        a, b = await engine.get_contact(ws, first), await engine.get_contact(ws, other)
        assert (a["first_name"], a["last_name"], a["custom_fields"]) == ("A3", "L2", {})  # cleared after v2
        assert (b["first_name"], b["last_name"]) == ("B2", None)

        async def rows() -> list[tuple[Any, ...]]:
            async with engine.store.reading() as conn:
                return [tuple(r) for r in (await conn.execute(select(t.contacts).order_by(t.contacts.c.id))).all()]

        inline = await rows()
        await engine.projector.rebuild(engine.store)
        assert await rows() == inline


async def test_import_after_an_erasure_creates_and_updates_by_live_contacts(db_url: str, clock: ManualClock) -> None:
    """The duplicate check drops erased rows itself (not in its SQL, which made SQLite scan the
    workspace): on both backends an erased contact's address is created again, the live ones are
    updated."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as engine:
        ws = (await engine.create_workspace("w")).id
        first = await engine.import_contacts(ws, [{"email": f"{n}@corp.io"} for n in "abc"])
        assert (first["created"], first["updated"]) == (3, 0)
        gone = (await engine.list_contacts(ws, q="a@corp.io"))["data"][0]["id"]
        await engine.erase_contact(ws, gone)
        again = await engine.import_contacts(ws, [{"email": "a@corp.io", "first_name": "New"},
                                                  {"email": "b@corp.io", "first_name": "Bee"},
                                                  {"email": "d@corp.io"}])
        assert (again["created"], again["updated"]) == (2, 1)
        listed = {c["email"]: c for c in (await engine.list_contacts(ws, per_page=50))["data"]}
        assert sorted(listed) == ["a@corp.io", "b@corp.io", "c@corp.io", "d@corp.io"]
        assert listed["a@corp.io"]["id"] != gone and listed["a@corp.io"]["first_name"] == "New"
        assert listed["b@corp.io"]["first_name"] == "Bee"


def test_email_domains_are_probed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[str] = []

    def counting(address: str, **options: Any) -> Any:
        probes.append(address)
        return validate_email(address, **options)

    monkeypatch.setattr(contact_import, "validate_email", counting)
    monkeypatch.setattr(contact_import, "_DOMAINS", {})
    addresses = ["ann@Once-Probed.example", "bob@once-probed.example", "cy@no_such_domain", "dee@once-probed.example"]
    for _ in range(2):  # a second import (a new batch) answers from the first one's probes
        answers = []
        for address in addresses:
            try:
                answers.append(contact_import.BatchEmails().check(address))
            except ValueError as exc:
                answers.append(str(exc))
        expected = []
        for address in addresses:
            try:
                expected.append(check_email(address))
            except ValueError as exc:
                expected.append(str(exc))
        assert answers == expected
    # one probe per domain as written, none in the second pass
    assert sorted(probe.split("@")[1] for probe in probes) == ["Once-Probed.example", "no_such_domain",
                                                                "once-probed.example"]


def test_domain_cache_starts_afresh_past_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[str, Any] = {}
    monkeypatch.setattr(contact_import, "_DOMAINS", cache)
    monkeypatch.setattr(contact_import, "DOMAIN_CACHE_SIZE", 2)
    emails = contact_import.BatchEmails()
    for domain in ("one.example", "two.example", "three.example"):
        emails.check(f"x@{domain}")
    assert list(cache) == ["three.example"]


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_gc_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(RuntimeError), paused_gc():
            raise RuntimeError("boom")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
