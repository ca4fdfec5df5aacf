"""Build the bytes of one campaign email, fast and without header injection.

The message is written directly as bytes from a fixed skeleton instead of through
``email.message.EmailMessage`` (2-3 ms a message, more than sending it) or the legacy
``email.mime`` classes. The stdlib still does the delicate encodings: RFC 2047 encoded words
(``email.header.Header``), quoted-printable bodies (``binascii.b2a_qp``, in C) and dates
(``email.utils.format_datetime``); the tests parse every shape back with the stdlib parser.

Every header value goes through :func:`~engine.delivery.content.templates.strip_controls` here, whatever
the caller did before, so contact data can never add a header line. Bodies are quoted-printable,
which never produces ``=_``: the MIME boundary starts with ``=_`` and so cannot occur in a body.

Tracking (all optional): an open pixel appended to the HTML, every http(s) link of ``<a>``/``<area>``
and of the text part rewritten to a signed click URL, and RFC 8058 one-click ``List-Unsubscribe``
headers. ``List-Unsubscribe-Post`` is offered only when ``public_url`` is https: RFC 8058 section 3.1
requires an HTTPS URI for one-click, and a receiver that POSTs over plain http would send the
token in clear (``List-Unsubscribe`` keeps both the URL and the ``mailto:``). Links to the
engine's own endpoints (``<public_url>/t/...`` and ``/u/...``) are never wrapped: a click URL
wrapped again only adds a redirect, and an unsubscribe page reached through the click tracker
would count an unsubscribe as a click.

Addresses: headers carry IDN domains in their ASCII (A-label) form; :func:`envelope_address` gives
the form for ``RCPT TO``, so that ``mueller@bücher.de`` needs no SMTPUTF8 on the wire.
"""

from __future__ import annotations

import binascii
import email.utils
import hashlib
import html as html_module
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import quote

from engine.delivery.content.templates import strip_controls
from engine.delivery.content.tokens import click_token, open_token, unsubscribe_token

__all__ = [
    "BuiltMessage",
    "Thread",
    "Tracking",
    "build_message",
    "envelope_address",
    "follow_up_subject",
    "html_to_text",
    "message_id_for",
    "parse_message_id",
    "unsubscribe_url",
]

_MAX_LINE = 78
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?\Z")
_MSGID = re.compile(r"<(?P<left>[^<>@\s]+)@(?P<right>[^<>@\s]+)>\Z")
_OURS = re.compile(r"<(?P<enrollment>[A-Za-z0-9_\-]+)\.(?P<step>\d+)@[^<>@\s]+>\Z")
_HREF = re.compile(
    r"""(?P<head><(?:a|area)\b[^>]*?\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))""",
    re.IGNORECASE,
)
# A URL in plain text runs to the next space, quote or angle bracket; parentheses are allowed in
# it and balanced afterwards (:func:`_text_url`), as common linkifiers do.
_TEXT_URL = re.compile(r"""https?://[^\s<>"'\]\[]+""", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n?|\n")


_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "figure",
        "footer",
        "form",
        "header",
        "main",
        "nav",
        "ol",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
    }
)
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})
_HIDDEN = frozenset({"head", "script", "style", "template", "title", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """Collects the readable text of an HTML body (see :func:`html_to_text`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "hr":
            self.parts.append("\n\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
            self._pre += tag == "pre"
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts)))
        elif tag == "img" and not self._hidden:
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.parts.append(f" {alt} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
            self._pre = max(0, self._pre - (tag == "pre"))
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            target = (href or "").strip()
            shown = "".join(self.parts[start:])
            label = _SPACES.sub(" ", shown).strip()
            if target.lower().startswith("mailto:"):
                target = target[7:].split("?", 1)[0]
            elif not target.lower().startswith(("http://", "https://")):
                return
            if target and target != label:
                self.parts.append(f" ({target})" if label else target)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.parts.append(data if self._pre else _SPACES.sub(" ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body, for the ``text/plain`` alternative.

    Tags go, entities are decoded, block elements become line breaks, list items ``- ``, links
    ``label (url)`` (the URL alone when it is the label), images their alt text; ``<head>``,
    ``<style>`` and ``<script>`` contents are dropped. A real HTML parser (``html.parser``), not
    regular expressions, so broken markup degrades into text rather than into garbage.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Thread:
    """Threading of a ``same_thread`` follow-up.

    ``previous_message_ids`` are the Message-IDs of the steps already sent, oldest first: the last
    is ``In-Reply-To``, all of them are ``References``. ``first_subject``, when given, is the first
    step's subject as this contact received it, and the subject follows
    :func:`follow_up_subject`; without it the subject given to :func:`build_message` is used as
    it is (the composer decides it, see :mod:`engine.delivery.content.compose`).
    """

    previous_message_ids: tuple[str, ...]
    first_subject: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracking:
    """What to add to an email for tracking and unsubscribing, and how to sign it.

    ``public_url`` is the base of the links (``https://t.example.com``); ``email_id`` is the only
    id open and click tokens carry. With ``unsubscribe`` on, ``workspace_id`` and ``contact_id``
    are required; the mailto address defaults to the From address (its mailbox is polled, and
    the subject carries the signed token so the request can be verified).
    """

    public_url: str
    secret: bytes = field(repr=False)
    email_id: str
    opens: bool = False
    clicks: bool = False
    unsubscribe: bool = False
    workspace_id: str | None = None
    contact_id: str | None = None
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """The wire bytes of one email, plus what the engine must remember about it.

    ``links`` are the original targets of the rewritten links; a click token's index points into
    this tuple. It is empty when click tracking is off.
    """

    raw: bytes
    message_id: str
    links: tuple[str, ...]
    subject: str


def message_id_for(enrollment_id: str, step: int, domain: str) -> str:
    """The Message-ID of step ``step`` of an enrollment: ``<enr_x.2@domain>``.

    Deterministic, so a retry or a crash-recovered claim sends the same Message-ID, and readable
    back (:func:`parse_message_id`) so replies and bounces map to the email even without a lookup.
    The left part is the engine's ``email_id`` (``<enrollment_id>.<step>``).
    """
    if step < 0:
        raise ValueError("step must be >= 0")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", enrollment_id):
        raise ValueError(f"enrollment id not usable in a Message-ID: {enrollment_id!r}")
    domain = _idna(domain.strip().rstrip(".").lower())
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a domain: {domain!r}")
    return f"<{enrollment_id}.{step}@{domain}>"


def parse_message_id(message_id: str) -> tuple[str, int] | None:
    """``(enrollment_id, step)`` from one of our Message-IDs (brackets optional), else ``None``."""
    value = message_id.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    match = _OURS.match(value)
    if match is None:
        return None
    return match.group("enrollment"), int(match.group("step"))


def _idna(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a domain: {domain!r}") from exc


def _clean(value: str) -> str:
    """Control characters out, lone surrogates replaced: safe to encode and to put in a header."""
    value = strip_controls(value)
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _header(name: str, value: str) -> str:
    """One unstructured header, folded, RFC 2047-encoded when not plain ASCII."""
    value = _clean(value).strip()
    words = value.split(" ")
    if value.isascii() and "=?" not in value and max(map(len, words)) <= 900:
        line = f"{name}: {value}"
        if len(line) <= _MAX_LINE:
            return line + "\r\n"
        # Fold before a space: unfolding removes only the CRLF, so the value reads back unchanged.
        lines: list[str] = []
        current = f"{name}:"
        for word in words:
            if len(current) + 1 + len(word) > _MAX_LINE and current.strip():
                lines.append(current)
                current = ""
            current += " " + word
        lines.append(current)
        return "\r\n".join(lines) + "\r\n"
    encoded = Header(value, "utf-8", maxlinelen=_MAX_LINE, header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n"


def _address(value: str) -> str:
    addr = _clean(value).strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c in addr for c in ' <>,;"\\()[]'):
        raise ValueError(f"not a usable email address: {value!r}")
    return f"{local}@{_idna(domain)}"


def _mailbox_header(name: str, display: str | None, address: str) -> str:
    """``Name: "Display" <addr>`` with the display name quoted or encoded as needed."""
    addr = _address(address)
    phrase = _clean(display or "").strip()[:256]
    if not phrase:
        return f"{name}: {addr}\r\n"
    if phrase.isascii() and "=?" not in phrase:
        if not addr.isascii():
            # A UTF-8 local part (SMTPUTF8): formataddr refuses it, so quote the phrase ourselves.
            return f'{name}: "{email.utils.quote(phrase)}" <{addr}>\r\n'
        if _PLAIN_PHRASE.fullmatch(phrase):  # what formataddr writes unquoted, without its parsing
            return f"{name}: {phrase} <{addr}>\r\n"
        return f"{name}: {email.utils.formataddr((phrase, addr))}\r\n"
    encoded = Header(phrase, "utf-8", maxlinelen=_MAX_LINE, header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded} <{addr}>\r\n"


# A display name formataddr leaves unquoted: atext and spaces, no RFC 5322 specials.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")


@lru_cache(maxsize=64)
def _date_header(date: datetime) -> str:
    """``Date:``'s value; a tick composes its whole batch at one instant, so it is formatted once."""
    return email.utils.format_datetime(date)


def _msgid(value: str) -> str:
    value = _clean(value).strip()
    if not _MSGID.match(value):
        raise ValueError(f"not a Message-ID: {value!r}")
    return value


def _id_list_header(name: str, ids: Sequence[str]) -> str:
    return f"{name}: " + "\r\n ".join(_msgid(i) for i in ids) + "\r\n"


def _qp(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends and soft breaks at 76 columns."""
    data = _NEWLINES.sub("\n", text).encode("utf-8", "replace")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


def _rewrite_links(html: str, register: _LinkRegister) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("dq") is not None:
            raw, quote_char = match.group("dq"), '"'
        elif match.group("sq") is not None:
            raw, quote_char = match.group("sq"), "'"
        else:
            raw, quote_char = match.group("bare"), '"'
        target = html_module.unescape(raw).strip()
        if not target.lower().startswith(("http://", "https://")):
            return match.group(0)
        url = register.url(target)
        return match.group(0) if url is None else f"{match.group('head')}{quote_char}{url}{quote_char}"

    return _HREF.sub(replace, html)


class _LinkRegister:
    """Numbers distinct link targets in order of first appearance and makes their click URLs.

    Links to the engine's own endpoints are not registered (see the module docstring).
    """

    __slots__ = ("_base", "_email_id", "_ours", "_secret", "_urls", "links")

    def __init__(self, base: str, secret: bytes, email_id: str) -> None:
        self._base = base
        self._secret = secret
        self._email_id = email_id
        self._ours = (f"{base}/t/".lower(), f"{base}/u/".lower())
        self._urls: dict[str, str] = {}
        self.links: list[str] = []

    def url(self, target: str) -> str | None:
        """The click URL for ``target``, or ``None`` when it must stay as it is."""
        url = self._urls.get(target)
        if url is None:
            if target.lower().startswith(self._ours):
                return None
            token = click_token(self._secret, self._email_id, len(self.links))
            url = self._urls[target] = f"{self._base}/t/c/{token}"
            self.links.append(target)
        return url


def _text_url(candidate: str) -> str:
    """The URL at the start of ``candidate`` (a run of non-space text from ``http``), linkifier-style.

    Trailing sentence punctuation is not part of it, nor is a trailing ``)`` that has no ``(`` in
    the URL: ``(see https://x.test/a)`` ends at ``a``, while
    ``https://en.wikipedia.org/wiki/Foo_(bar)`` keeps its balanced parenthesis.
    """
    end = len(candidate)
    unbalanced = candidate.count(")") - candidate.count("(")
    while end:
        last = candidate[end - 1]
        if last in _TRAILING_PUNCTUATION:
            end -= 1
        elif last == ")" and unbalanced > 0:
            end -= 1
            unbalanced -= 1
        else:
            break
    return candidate[:end]


def _rewrite_text_links(text: str, register: _LinkRegister) -> str:
    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        target = _text_url(found)
        url = register.url(target) if target else None
        return found if url is None else url + found[len(target) :]

    return _TEXT_URL.sub(replace, text)


def _append_pixel(html: str, src: str) -> str:
    pixel = f'<img src="{src}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0" />'
    ends = list(_BODY_END.finditer(html))
    if ends:
        at = ends[-1].start()
        return html[:at] + pixel + html[at:]
    return html + pixel


def follow_up_subject(subject: str, first_subject: str) -> str:
    """The subject of a same-thread follow-up whose own (rendered) subject is ``subject``.

    Its own subject when it has one: the author wrote it on purpose. When it is blank, ``Re: `` and
    the first step's subject (unchanged when that already starts with ``Re:``), so the follow-up
    reads as an answer in the recipient's thread.
    """
    own = _clean(subject).strip()
    if own:
        return own
    first = _clean(first_subject).strip()
    return first if first[:3].lower() == "re:" else f"Re: {first}".strip()


def envelope_address(address: str) -> str:
    """The form of ``address`` for ``RCPT TO``: the domain as an A-label (``xn--...``).

    With an ASCII local part the address then needs no SMTPUTF8, which many servers do not offer;
    a non-ASCII local part cannot be written in ASCII at all, so that address is kept as given
    (UTF-8, and the mailer asks for SMTPUTF8). ValueError for something that is not an address.
    """
    addr = _clean(address).strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not a usable email address: {address!r}")
    if not local.isascii():
        return addr
    return f"{local}@{_idna(domain)}"


def _base_url(tracking: Tracking) -> str:
    base = tracking.public_url.strip().rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        raise ValueError(f"public_url must be an http(s) URL: {tracking.public_url!r}")
    return base


def _unsubscribe_token(tracking: Tracking) -> str | None:
    if not tracking.workspace_id or not tracking.contact_id:
        return None
    return _signed_unsubscribe(tracking.secret, tracking.workspace_id, tracking.contact_id, tracking.email_id)


@lru_cache(maxsize=1024)
def _signed_unsubscribe(secret: bytes, workspace_id: str, contact_id: str, email_id: str) -> str:
    """One signature per email: the merge tag and the List-Unsubscribe header carry the same token."""
    return unsubscribe_token(secret, workspace_id, contact_id, email_id)


def unsubscribe_url(tracking: Tracking) -> str | None:
    """The contact's one-click unsubscribe page (``<public_url>/u/<token>``), or ``None`` without ids.

    The same URL as in ``List-Unsubscribe``; the ``{{unsubscribe_url}}`` merge tag shows it. It
    does not depend on ``tracking.unsubscribe``: an author may put the link in the body of a
    campaign whose headers are off.
    """
    token = _unsubscribe_token(tracking)
    return None if token is None else f"{_base_url(tracking)}/u/{token}"


def build_message(
    *,
    message_id: str,
    date: datetime,
    from_email: str,
    from_name: str | None,
    to_email: str,
    to_name: str | None,
    subject: str,
    body_html: str,
    body_text: str | None = None,
    thread: Thread | None = None,
    tracking: Tracking | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> BuiltMessage:
    """The RFC 5322 bytes (CRLF line ends, 7-bit) of one ``multipart/alternative`` email.

    ``subject``, ``body_html`` and ``body_text`` are already rendered for the contact. Without
    ``body_text`` the text part is made from the HTML (before tracking, so it shows the real link
    targets; with click tracking those are then rewritten like the HTML ones). ``date`` must be
    timezone-aware and comes from the engine's clock. ``thread`` makes a same-thread follow-up:
    ``In-Reply-To``/``References``, and with ``thread.first_subject`` the subject rule of
    :func:`follow_up_subject`.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    message_id = _msgid(message_id)
    text = html_to_text(body_html) if body_text is None else body_text
    html = body_html
    links: tuple[str, ...] = ()
    headers: list[str] = [
        f"Message-ID: {message_id}\r\n",
        f"Date: {_date_header(date)}\r\n",
        _mailbox_header("From", from_name, from_email),
        _mailbox_header("To", to_name, to_email),
    ]
    if thread is not None and thread.first_subject is not None:
        final_subject = follow_up_subject(subject, thread.first_subject)
    else:
        final_subject = _clean(subject).strip()
    headers.append(_header("Subject", final_subject))
    if thread is not None and thread.previous_message_ids:
        headers.append(f"In-Reply-To: {_msgid(thread.previous_message_ids[-1])}\r\n")
        headers.append(_id_list_header("References", thread.previous_message_ids))

    if tracking is not None:
        base = _base_url(tracking)
        if tracking.clicks:
            register = _LinkRegister(base, tracking.secret, tracking.email_id)
            html = _rewrite_links(html, register)
            text = _rewrite_text_links(text, register)
            links = tuple(register.links)
        if tracking.opens:
            html = _append_pixel(html, f"{base}/t/o/{open_token(tracking.secret, tracking.email_id)}")
        if tracking.unsubscribe:
            token = _unsubscribe_token(tracking)
            if token is None:
                raise ValueError("unsubscribe needs workspace_id and contact_id")
            mailto = _address(tracking.unsubscribe_mailto or from_email)
            headers.append(
                f"List-Unsubscribe: <{base}/u/{token}>,\r\n"
                f" <mailto:{quote(mailto, safe='@')}?subject=unsubscribe%20{quote(token)}>\r\n"
            )
            if base.lower().startswith("https://"):  # RFC 8058 section 3.1: one-click needs HTTPS
                headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")

    for name, value in (extra_headers or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9\-]+", name):
            raise ValueError(f"bad header name: {name!r}")
        headers.append(_header(name, value))

    boundary = "=_ce" + hashlib.sha256(message_id.encode()).hexdigest()[:28]
    headers.append("MIME-Version: 1.0\r\n")
    headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n')
    part_head = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    delimiter = f"\r\n--{boundary}\r\n".encode()
    raw = b"".join(
        (
            "".join(headers).encode("utf-8"),
            b"\r\n",
            b"This is a multi-part message in MIME format.",
            delimiter,
            part_head.format("plain").encode(),
            _qp(text),
            delimiter,
            part_head.format("html").encode(),
            _qp(html),
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    return BuiltMessage(raw=raw, message_id=message_id, links=links, subject=final_subject)
