"""Validating an import's rows once per batch, fast, with exactly the answers of a single contact's check.

An import of 10,000 contacts spent most of its time in ``email_validator``: each address's
domain goes through IDNA and UTS #46 character by character, although the rows of one file share
few domains (a CRM export has many people per company; consumer lists share a handful of
providers). :class:`BatchEmails` checks each distinct domain once (per process) and applies the
library's own local-part rule to the rest; any address off that plain path (non-ASCII, quoted,
a display name, a role mailbox the library lowercases, an invalid domain, a length near the limit)
goes through :func:`engine.domain.models.check_email` itself, so the normalised address and
every error message are the ones a single ``POST /v1/contacts`` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from pydantic import ValidationError, ValidationInfo, field_validator

from engine.domain import models as m
from engine.errors import ValidationFailed
from events.gc_pause import paused_gc

_PROBE_LOCAL = "a"  # a local part valid everywhere: the probe's outcome depends on the domain alone
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_FIELDS = frozenset(m.ContactIn.model_fields)  # read once: the class attribute is a descriptor, costly per row
DOMAIN_CACHE_SIZE = 100_000
"""Distinct domains whose probe outcome the process keeps (a few MB); past it the cache starts afresh."""

DomainProbe = tuple[str, int] | None
"""(normalised domain, longest UTF-8 length of its written, normalised and IDNA ASCII forms), or
None when the domain alone makes an address invalid."""
_DOMAINS: dict[str, DomainProbe] = {}
"""domain as written -> its probe, shared by every import of the process.

A probe depends on the domain's text alone (no DNS: ``check_deliverability=False``), so an answer
stays true. Each request of a large import arrives in its own batch of 10,000, and the batches
of one file share their domains: probing each again cost about 0.05 s a request (1,000 domains at
50 µs), a tenth of what the rest of the import costs.
"""


class BatchEmails:
    """``check_email`` for the addresses of one batch, each distinct domain validated once per process."""

    def __init__(self) -> None:
        self._domains = _DOMAINS

    def check(self, address: str) -> str:
        """The normalised address, or ``ValueError`` with :func:`~engine.domain.models.check_email`'s message.

        The plain path: an ASCII address with one ``@``, a dot-atom local part (the library's own
        ``DOT_ATOM_TEXT``, which it returns unchanged) that is not a role mailbox, and a domain
        the library accepted in a probe address, the whole within the length limit in each form
        the library measures. Then its answer is ``local@normalised-domain``, which is what
        ``validate_email`` builds for such an address.
        """
        local, at, domain = address.partition("@")
        if (at and address.isascii() and "@" not in domain and DOT_ATOM_TEXT.match(local)
                and local.lower() not in _ROLE_MAILBOXES):
            known = self._domain(domain)
            if known is not None and len(local) + 1 + known[1] <= EMAIL_MAX_LENGTH:
                return f"{local}@{known[0]}"
        return m.check_email(address)

    def _domain(self, domain: str) -> DomainProbe:
        try:
            return self._domains[domain]
        except KeyError:
            pass
        found: DomainProbe
        try:
            probe = validate_email(f"{_PROBE_LOCAL}@{domain}", check_deliverability=False)
        except EmailNotValidError:
            found = None
        else:
            longest = max(len(form.encode()) for form in (domain, probe.domain, probe.ascii_domain))
            found = (probe.domain, longest)
        if len(self._domains) >= DOMAIN_CACHE_SIZE:
            self._domains.clear()
        self._domains[domain] = found
        return found


class ImportRow(m.ContactIn):
    """A contact of an import: :class:`~engine.domain.models.ContactIn` with the batch's email check.

    Validated with ``context={"emails": BatchEmails()}``; the other fields and every error are
    the model's own.
    """

    # The same name as the parent's validator, which pydantic then replaces instead of running both;
    # the added ``info`` argument is what mypy objects to.
    @field_validator("email")
    @classmethod
    def _email(cls, v: str, info: ValidationInfo) -> str:  # type: ignore[override]
        emails = info.context["emails"] if isinstance(info.context, dict) else BatchEmails()
        result: str = emails.check(v)
        return result


def parse_row(raw: dict[str, Any], emails: BatchEmails) -> m.ContactIn:
    """One import row as a contact: known fields by name, every other non-empty cell a custom field.

    Raises :class:`~engine.errors.ValidationFailed` as ``m.parse(m.ContactIn, ...)`` would.
    """
    known = {k: v for k, v in raw.items() if k in _FIELDS and v not in ("", None)}
    custom = {k: v for k, v in raw.items() if k not in _FIELDS and v not in ("", None)}
    if custom:
        known["custom_fields"] = {**(known.get("custom_fields") or {}), **custom}
    try:
        return ImportRow.model_validate(known, context={"emails": emails})
    except ValidationError as exc:
        raise ValidationFailed(m.validation_errors(exc)) from None


def parse_rows(rows: list[Any], email_hash: Callable[[str], str]
               ) -> tuple[dict[str, tuple[int, m.ContactIn]], list[dict[str, Any]]]:
    """An import's rows validated: (email hash -> (row number, contact), the invalid rows' errors).

    Rows are numbered from 1; a later row with the same address replaces an earlier one. One
    synchronous pass with the cyclic collector paused: the contacts it builds all live to the
    import's end, and the collector walked them again every few hundred rows.
    """
    invalid: list[dict[str, Any]] = []
    parsed: dict[str, tuple[int, m.ContactIn]] = {}
    emails = BatchEmails()
    with paused_gc():
        for number, raw in enumerate(rows, start=1):
            if not isinstance(raw, dict):
                invalid.append({"row": number, "error": "each row must be an object"})
                continue
            try:
                item = parse_row(raw, emails)
            except ValidationFailed as exc:
                invalid.append({"row": number,
                                "error": "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)})
                continue
            parsed[email_hash(item.email)] = (number, item)
    return parsed, invalid


__all__ = ["BatchEmails", "ImportRow", "parse_row", "parse_rows"]
