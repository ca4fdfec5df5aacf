"""Apply a large provider's own error catalogue when the failure came from (or went to) it.

A generic wording rule cannot know that Yahoo's "dd This user doesn't have a yahoo.com account"
means a dead address, or that Orange's "LPN007_416" does. When the recipient domain, the remote
MTA or the reporting MTA belongs to a provider with a documented catalogue, that catalogue is
consulted before the generic rules. Host matching follows Sisimai (whose labels are the bar): the
recipient domain matches a provider when one of its host suffixes ends with that domain.
"""

from __future__ import annotations

import re

from engine.delivery.bounces import rhost_tables as tables
from engine.delivery.bounces.model import Finding
from engine.delivery.bounces.text import squeeze

_HOST_RE = re.compile(r"(?<![@A-Za-z0-9.-])((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?![A-Za-z0-9-]*@)")


def _hosts_in(text: str) -> list[str]:
    return [h.lower().rstrip(".") for h in _HOST_RE.findall(text or "")]


def provider_of(f: Finding) -> str:
    """The provider whose catalogue applies to this failure, or ``""``."""
    domain = f.recipient.rpartition("@")[2].lower()
    if domain:
        for name, suffixes in tables.PROVIDER_HOSTS.items():
            if any(s.endswith(domain) for s in suffixes):
                return name
    remote = [f.rhost.lower()] if f.rhost else []
    remote += _hosts_in(f.diagnosis)
    for candidates in (remote, [f.lhost.lower()] if f.lhost else []):
        for host in candidates:
            host = host.strip("[]().").split()[0] if host.strip() else ""
            for name, suffixes in tables.PROVIDER_HOSTS.items():
                if host and any(host.endswith(s) for s in suffixes):
                    return name
    return ""


def _by_phrases(table: dict[str, tuple[str, ...]], text: str) -> str:
    for reason, phrases in table.items():
        if any(p in text for p in phrases):
            return reason
    return ""


def _google(f: Finding, text: str) -> str:
    if not f.status or not f.reply_code:
        return ""
    tail = f.status[2:]
    for status_tail, phrase, reason in tables.GOOGLE:
        if phrase in text and status_tail == tail:
            return reason
    return ""


def _microsoft(f: Finding, text: str) -> str:
    for status, phrase, reason in tables.MICROSOFT:
        if f.status == status and phrase in text:
            return reason
    for code, reason in (("RP-00", "badreputation"), ("SC-001", "badreputation"), ("SC-002", "policyviolation"),
                         ("SC-003", "blocked"), ("SC-004", "blocked"), ("DY-001", "blocked"),
                         ("DY-002", "virusdetected"), ("OU-001", "blocked"), ("OU-002", "badreputation")):
        if code in f.diagnosis:
            return reason
    return ""


def _franceptt(f: Finding, text: str) -> str:
    match = re.search(r"(?:lpn|lpnaaa|ofr|ouk)[-_]?\d*[-_](\d{3})\b", text)
    if match:
        return tables.FRANCEPTT_CODES.get(match.group(1), "")
    return "authfailure" if "spf/dns de votre nom de domaine" in text else ""


def _coded(f: Finding, text: str, provider: str) -> str:
    raw = f.diagnosis
    if provider == "facebook":
        match = re.search(r"\b([A-Z]{3}-[PT]\d)\b", raw)
        return tables.FACEBOOK_CODES.get(match.group(1), "") if match else ""
    if provider == "godaddy":
        match = re.search(r"\b(IB\d{3})\b", raw)
        if match and match.group(1) in tables.GODADDY_CODES:
            return tables.GODADDY_CODES[match.group(1)]
        return _by_phrases(tables.PHRASES["godaddy"], text)
    if provider == "spectrum":
        match = re.search(r"AUP#\D*(\d{4})", raw)
        if not match:
            return ""
        number = int(match.group(1))
        return next((r for lo, hi, r in tables.SPECTRUM_RANGES if lo <= number <= hi), "")
    if provider == "iua":
        match = re.search(r"\.i\.ua/err/(\d+)/", text)
        return tables.IUA_CODES.get(match.group(1), "") if match else ""
    if provider == "cox":
        match = re.search(r"AUP#([A-Z0-9]+)", raw)
        if match:
            code = match.group(1)
            if code in tables.COX_CODES:
                return tables.COX_CODES[code]
            # Cox's documented code families: IPBLnnnn = the sending IP is on a DNS blocklist,
            # URLBLnnn = a URL in the body is on one.
            for prefix, reason in tables.COX_CODE_FAMILIES:
                if code.startswith(prefix):
                    return reason
        return _by_phrases(tables.PHRASES["cox"], text)
    return ""


def _nttdocomo(f: Finding, text: str) -> str:
    if f.status in ("5.1.1", "5.0.911"):
        return "userunknown"
    if f.status == "5.2.0":
        return "filtered"
    for reason, phrase in (("mailboxfull", "552 too much mail data"), ("toomanyconn", "552 too many recipients"),
                           ("syntaxerror", "503 bad sequence of commands"),
                           ("syntaxerror", "504 command parameter not implemented")):
        if phrase in text:
            return reason
    if f.status == "5.0.0" and f.command in ("RCPT", "DATA"):
        return "userunknown" if f.command == "RCPT" else "rejected"
    return "userunknown" if "550 unknown user" in text else ""


def _gsuite(f: Finding, text: str) -> str:
    klass = (f.status or f.reply_code)[:1]
    if ("responded with code nxdomain" in text or "domain name not found" in text) and klass:
        return "hostunknown" if klass == "5" else "networkerror"
    if " had no relevant answers." in text and klass != "5":
        return "networkerror"
    return _by_phrases(tables.PHRASES["gsuite"], text)


def _kddi(f: Finding, text: str) -> str:
    """au (KDDI): "550 : User unknown", with no address, is the recipient's domain filter.

    Relays re-quote the answer ("550: : User unknown", "550 :User unknown"); the spacing around the
    colons is theirs, so it is normalised before the catalogue is read.
    """
    normalised = re.sub(r"\b550\s*:?\s*:\s*(?=user unknown)", "550 : ", squeeze(text))
    return _by_phrases(tables.PHRASES["kddi"], normalised)


def rhost_reason(f: Finding) -> str:
    """The reason a known remote provider's error wording names, or ``""``."""
    if not f.diagnosis:
        return ""
    provider = provider_of(f)
    if not provider:
        return ""
    text = f.diagnosis.lower()
    if provider == "google":
        return _google(f, text)
    if provider == "microsoft":
        return _microsoft(f, text)
    if provider == "franceptt":
        return _franceptt(f, text)
    if provider == "nttdocomo":
        return _nttdocomo(f, text)
    if provider == "gsuite":
        return _gsuite(f, text)
    if provider == "kddi":
        return _kddi(f, text)
    if provider == "mimecast":
        return _by_phrases(tables.MIMECAST, text) if f.reply_code else ""
    if provider in ("facebook", "godaddy", "spectrum", "iua", "cox"):
        return _coded(f, text, provider)
    return _by_phrases(tables.PHRASES.get(provider, {}), text)


__all__ = ["provider_of", "rhost_reason"]
