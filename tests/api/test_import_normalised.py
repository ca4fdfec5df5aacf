"""REST import of CSV files as spreadsheets export them: any delimiter, headers in any spelling,
multipart uploads, a column mapping, and ?list_id= to put the contacts on a list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import CampaignEngine
from engine.service.contact_csv import normalise_header, read_rows, sniff_delimiter
from tests.api.test_management_api import event_count
from tests.conftest import Api

CSV = {"Content-Type": "text/csv"}


async def contact(api: Api, email: str) -> dict[str, Any]:
    found = (await api.get(f"/v1/contacts?q={email}")).json()["data"]
    assert len(found) == 1, found
    return dict(found[0])


@pytest.mark.parametrize(("header", "field"), [
    ("Email", "email"), ("E-mail", "email"), ("email address", "email"), ("Email Address", "email"),
    ("EMAIL", "email"), ("First Name", "first_name"), ("firstname", "first_name"), ("first", "first_name"),
    ("first-name", "first_name"), ("Last Name", "last_name"), ("surname", "last_name"),
    ("lastname", "last_name"), ("Company", "company"), ("Company Name", "company"),
    ("organisation", "company"), ("Organization", "company"), ("Time Zone", "timezone"), ("tz", "timezone"),
    ("  Lead Score ", "lead_score"), ("Lead-Score", "lead_score"), ("plan", "plan"),
])
def test_headers_normalise_to_fields(header: str, field: str) -> None:
    assert normalise_header(header) == field


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    text = delimiter.join(["Email", "First Name", "Company Name"]) + "\n" + \
        delimiter.join(["ann@a.io", "Ann", "Acme, Inc" if delimiter != "," else "Acme"]) + "\n"
    assert sniff_delimiter(text) == delimiter
    assert read_rows("\ufeff" + text)[0]["email"] == "ann@a.io"


def test_single_column_falls_back_to_comma() -> None:
    assert sniff_delimiter("email\nann@a.io\n") == ","
    assert read_rows("email\nann@a.io\n") == [{"email": "ann@a.io"}]


async def test_semicolon_file_with_spreadsheet_headers(api: Api) -> None:
    text = "\ufeffEmail;First Name;Company Name;Lead Score\nann@a.io;Ann;Acme, Inc;7\nnot-an-email;X;Y;1\n"
    r = await api.post("/v1/contacts/import", content=text.encode(), headers=CSV)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 1, "updated": 0, "invalid": [{"row": 2, "error": r.json()["invalid"][0]["error"]}]}
    ann = await contact(api, "ann@a.io")
    assert (ann["first_name"], ann["company"], ann["custom_fields"]) == ("Ann", "Acme, Inc", {"lead_score": "7"})


async def test_tab_file_with_e_mail_header(api: Api) -> None:
    text = "E-mail\tfirstname\tSurname\tTime Zone\nbob@b.io\tBob\tStone\tEurope/Paris\n"
    r = await api.post("/v1/contacts/import", content=text.encode(), headers=CSV)
    assert r.json() == {"created": 1, "updated": 0, "invalid": []}, r.text
    bob = await contact(api, "bob@b.io")
    assert (bob["first_name"], bob["last_name"], bob["timezone"], bob["custom_fields"]) == \
        ("Bob", "Stone", "Europe/Paris", {})


async def test_multipart_upload_with_mapping(api: Api) -> None:
    text = "Work Email,Given,Org\ncy@c.io,Cy,Corp\n"
    r = await api.post("/v1/contacts/import", files={"file": ("leads.csv", text.encode(), "text/csv")},
                       data={"mapping": json.dumps({"Work Email": "email", "Org": "company", "Given": None})})
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 1, "updated": 0, "invalid": []}
    cy = await contact(api, "cy@c.io")
    assert (cy["first_name"], cy["company"]) == (None, "Corp")
    r = await api.post("/v1/contacts/import", files={"other": ("x.csv", b"email\nd@d.io\n", "text/csv")})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = await api.post("/v1/contacts/import?mapping=[1]", content=b"email\nd@d.io\n", headers=CSV)
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["field"] == "mapping"
    r = await api.post("/v1/contacts/import?mapping=" + "[" * 5000, content=b"email\nd@d.io\n", headers=CSV)
    assert r.status_code == 422


async def test_list_id_adds_created_and_updated_contacts(api: Api) -> None:
    lst = (await api.post("/v1/lists", json={"name": "Leads"})).json()
    await api.post("/v1/contacts", json={"email": "old@a.io"})
    text = "Email,First Name\nold@a.io,Olga\nnew@a.io,Ned\nbroken,X\n"
    r = await api.post(f"/v1/contacts/import?list_id={lst['id']}", content=text.encode(), headers=CSV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["updated"], len(body["invalid"])) == (1, 1, 1)
    assert body["added_to_list"] == 2 and body["list_id"] == lst["id"]
    members = (await api.get(f"/v1/contacts?list_id={lst['id']}")).json()["data"]
    assert sorted(m["email"] for m in members) == ["new@a.io", "old@a.io"]
    r = await api.post(f"/v1/contacts/import?list_id={lst['id']}", json=[{"email": "json@a.io"}])
    assert r.json()["added_to_list"] == 1


async def test_unknown_or_foreign_list_is_404_with_nothing_written(api: Api, other_api: Api,
                                                                   engine: CampaignEngine) -> None:
    foreign = (await other_api.post("/v1/lists", json={"name": "Theirs"})).json()["id"]
    before = await event_count(engine)
    for list_id in ("lst_nope", foreign):
        r = await api.post(f"/v1/contacts/import?list_id={list_id}", content=b"Email\nann@a.io\n", headers=CSV)
        assert r.status_code == 404 and r.json()["error"]["code"] == "list_not_found", r.text
        r = await api.post(f"/v1/contacts/import?list_id={list_id}",
                           files={"file": ("x.csv", b"Email\nann@a.io\n", "text/csv")})
        assert r.status_code == 404
        r = await api.post(f"/v1/contacts/import?list_id={list_id}", json=[{"email": "ann@a.io"}])
        assert r.status_code == 404
    assert await event_count(engine) == before
    assert (await api.get("/v1/contacts")).json()["pagination"]["total"] == 0
