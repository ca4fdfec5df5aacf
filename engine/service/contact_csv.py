"""Reading a contacts CSV as people export it from spreadsheets and CRMs, into import rows.

Exports rarely say ``email,first_name``: they say ``E-mail;First Name;Company Name``, with a BOM,
semicolons (Excel in most of Europe), tabs or pipes. Every header goes through
:func:`normalise_header` here, the one place that decides which column is which field, so the
REST route, multipart uploads and the CLI read a file the same way.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import ValidationFailed

KNOWN_FIELDS = ("email", "first_name", "last_name", "company", "timezone")
"""Columns that fill a contact's own fields; every other column becomes a custom field."""

DELIMITERS = ",;\t|"
SNIFF_LINES = 5  # the header and a few rows: enough to see the delimiter, cheap on a huge file

_SEPARATORS = re.compile(r"[\s_\-.]+")
_ALIASES: dict[str, str] = {
    # keyed by the header with every separator removed: "E-mail", "e_mail" and "E Mail" all read "email"
    "email": "email", "emailaddress": "email", "mail": "email",
    "firstname": "first_name", "first": "first_name", "givenname": "first_name", "forename": "first_name",
    "lastname": "last_name", "last": "last_name", "surname": "last_name", "familyname": "last_name",
    "company": "company", "companyname": "company", "organisation": "company", "organization": "company",
    "organisationname": "company", "organizationname": "company",
    "timezone": "timezone", "tz": "timezone",
}


def normalise_header(header: str) -> str:
    """The field a column header stands for.

    Known fields match whatever the case, spacing, underscores, hyphens or dots, and through
    common aliases ("E-mail", "Email Address", "First Name", "surname", "Company Name",
    "organisation", "Time Zone", "tz"). Any other header becomes the name of a custom field in
    snake_case ("Lead Score" -> ``lead_score``), so that two exports spelling a column
    differently still fill one custom field.
    """
    snake = _SEPARATORS.sub("_", header.strip().lstrip("\ufeff").lower()).strip("_")
    return _ALIASES.get(snake.replace("_", ""), snake)


def sniff_delimiter(text: str) -> str:
    """The delimiter of ``text``: comma, semicolon, tab or pipe.

    ``csv.Sniffer`` looks at the first lines. It gives up on some files (a single column, rows
    of unequal length); then the candidate seen most often in the header row decides, and
    comma when the header has none of them.
    """
    sample = "\n".join(text.splitlines()[:SNIFF_LINES])
    header = sample.split("\n", 1)[0]
    try:
        found = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        found = ""
    if found and found in header:
        return found
    counts = {candidate: header.count(candidate) for candidate in DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


def parse_mapping(value: Any) -> dict[str, str | None]:
    """Check a column mapping ``{header: field}``; a field of ``null`` or ``""`` skips the column.

    Refused with 422 ``validation_failed`` (field ``mapping``) before anything is written.
    """
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(key, str) and (target is None or isinstance(target, str)) for key, target in value.items()):
        raise ValidationFailed([{"field": "mapping",
                                 "message": "mapping must be a JSON object of {header: field or null}"}])
    return {key: (target or None) for key, target in value.items()}


def _field_of(header: str, mapping: Mapping[str, str | None]) -> str | None:
    """The mapping names a header exactly or in any spelling :func:`normalise_header` accepts."""
    if header in mapping:
        target = mapping[header]
    else:
        normalised = {normalise_header(key): target for key, target in mapping.items()}
        if normalise_header(header) not in normalised:
            return normalise_header(header) or None
        target = normalised[normalise_header(header)]
    return normalise_header(target) if target else None


def read_rows(text: str, mapping: Mapping[str, str | None] | None = None) -> list[dict[str, str]]:
    """Rows of a CSV text keyed by field name, empty cells left out.

    The first row is the header. When two columns map to one field (``Email`` and ``E-mail``),
    the first non-empty cell wins. 422 when no column maps to ``email``.
    """
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text), delimiter=sniff_delimiter(text))
    header = next(reader, None)
    fields = [_field_of(name, mapping or {}) for name in header or []]
    if "email" not in fields:
        raise ValidationFailed([{"field": "body", "message": "CSV needs a header row with an email column "
                                 "(Email, E-mail, Email Address, or a mapping naming it)"}])
    rows: list[dict[str, str]] = []
    for cells in reader:
        if not cells:
            continue  # a blank line (often the last one) is no row, as for csv.DictReader
        row: dict[str, str] = {}
        for field, cell in zip(fields, cells, strict=False):
            value = cell.strip()
            if field and value and field not in row:
                row[field] = value
        rows.append(row)
    return rows
