"""Defensive MIME helpers for reading inbound mail that may be malformed in any way.

Bounces come from decades-old MTAs, mis-declared charsets, broken multipart boundaries and bare
8-bit headers; the classifier must never raise on any of it. Every helper here swallows parser
errors and degrades to "no information" instead. The stdlib ``compat32`` policy is used because it
is the most lenient with broken headers (the modern policy raises on some of them lazily).
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.header import Header, decode_header, make_header
from email.message import Message

_REPORT_PARTS = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "message/feedback-report",
     "message/disposition-notification"}
)
_ORIGINAL_PARTS = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers",
     "message/partial", "text/rfc822"}
)
_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_TAG_RE = re.compile(r"<[^>]*>")
_HEADER_LINE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:[ \t]")


def parse(raw: bytes) -> Message:
    """Parse raw bytes into a message; garbage gives an (almost) empty message, never an error."""
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # pragma: no cover - the compat32 parser is designed not to raise
        return Message()


def _unescape_8bit(text: str) -> str:
    """Raw 8-bit header bytes arrive as surrogate escapes; read them as UTF-8 (else Latin-1)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_object_text(value: Header) -> str:
    """Text of a header the parser kept as raw 8-bit (``unknown-8bit``) chunks."""
    pieces = []
    for chunk, charset in decode_header(value):
        if isinstance(chunk, bytes):
            name = charset if charset and charset != "unknown-8bit" else "utf-8"
            pieces.append(decode_bytes(chunk, name))
        else:
            pieces.append(chunk)
    return "".join(pieces)


def decode_value(value: object) -> str:
    """A header value as readable text: RFC 2047 words decoded, folding removed."""
    if value is None:
        return ""
    try:
        raw = _header_object_text(value) if isinstance(value, Header) else _unescape_8bit(str(value))
    except Exception:
        return ""
    try:
        text = str(make_header(decode_header(raw))) if "=?" in raw else raw
    except Exception:
        text = raw
    return " ".join(text.split())


def header(msg: Message, name: str) -> str:
    """The decoded first value of header ``name`` or ``""``."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    return decode_value(value)


def headers(msg: Message, name: str) -> list[str]:
    """All decoded values of header ``name``."""
    try:
        values = msg.get_all(name) or []
    except Exception:
        return []
    return [decode_value(v) for v in values]


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _charset(part: Message) -> str:
    try:
        return part.get_content_charset() or "utf-8"
    except Exception:
        return "utf-8"


def decode_bytes(data: bytes, charset: str) -> str:
    """Bytes to text with the declared charset, falling back rather than failing."""
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1", errors="replace")


def as_text(part: Message) -> str:
    """The textual content of a leaf part (or the serialised content of a message/* part).

    Line endings are normalised to ``\\n`` whatever the transport used (CRLF, bare CR).
    """
    try:
        payload = part.get_payload()
        if isinstance(payload, list):
            text = "\n".join(_message_text(sub) for sub in payload if isinstance(sub, Message))
        else:
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                text = decode_bytes(data, _charset(part))
            else:
                text = payload if isinstance(payload, str) else ""
    except Exception:
        return ""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _message_text(msg: Message) -> str:
    try:
        lines = [f"{k}: {decode_value(v)}" for k, v in msg.items()]
    except Exception:
        lines = []
    body = ""
    try:
        if not msg.is_multipart():
            body = as_text(msg)
    except Exception:
        body = ""
    return "\n".join(lines) + "\n\n" + body


def html_to_text(html: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>", "\n", text)
    text = _TAG_RE.sub(" ", text)
    for entity, char in (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"),
                         ("&amp;", "&")):
        text = text.replace(entity, char)
    return text


def iter_parts(msg: Message) -> Iterator[tuple[Message, str, bool]]:
    """Yield ``(part, content type, inside_original)`` for every leaf, depth first.

    Parts nested in a returned original message are flagged so that the notification text is not
    mixed up with the text of the message that bounced.
    """
    stack: list[tuple[Message, bool, int]] = [(msg, False, 0)]
    while stack:
        part, inside, depth = stack.pop()
        ctype = content_type(part)
        if depth > 40:
            continue
        try:
            payload = part.get_payload()
        except Exception:
            payload = None
        if ctype in _ORIGINAL_PARTS:
            yield part, ctype, inside
            if isinstance(payload, list):
                for sub in reversed(payload):
                    if isinstance(sub, Message):
                        stack.append((sub, True, depth + 1))
            continue
        if ctype in _REPORT_PARTS or not isinstance(payload, list):
            # A multipart whose boundary is missing or broken arrives as one text blob.
            yield part, ("text/plain" if ctype.startswith("multipart/") else ctype), inside
            continue
        for sub in reversed(payload):
            if isinstance(sub, Message):
                stack.append((sub, inside, depth + 1))


def notification_texts(msg: Message) -> list[str]:
    """The human-readable text parts of the notification itself (not of the returned message)."""
    plain: list[str] = []
    html: list[str] = []
    for part, ctype, inside in iter_parts(msg):
        if inside:
            continue
        if ctype == "text/html":
            html.append(html_to_text(as_text(part)))
        elif ctype.startswith("text/") and ctype not in _ORIGINAL_PARTS:
            plain.append(as_text(part))
        elif part is msg and not ctype.startswith(("message/", "multipart/", "image/", "audio/", "video/")):
            # A single-part notification of an unexpected type (application/json...) is still text.
            plain.append(as_text(part))
    return plain or html


def report_parts(msg: Message, ctypes: frozenset[str] | set[str]) -> list[str]:
    """Texts of the machine-readable report parts of the given content types."""
    return [as_text(part) for part, ctype, inside in iter_parts(msg) if ctype in ctypes and not inside]


def original_parts(msg: Message) -> list[Message]:
    """The returned original message(s) or their headers, as parsed messages."""
    found: list[Message] = []
    for part, ctype, inside in iter_parts(msg):
        if ctype not in _ORIGINAL_PARTS or inside:
            continue
        try:
            payload = part.get_payload()
        except Exception:
            continue
        if isinstance(payload, list):
            found.extend(sub for sub in payload if isinstance(sub, Message))
        else:
            text = as_text(part).lstrip("\r\n")
            found.append(parse_headers_text(text))
    return found


def parse_headers_text(text: str) -> Message:
    """Parse the header block that starts ``text`` (the rest is ignored).

    Pasted headers are often damaged (folded lines that lost their indentation); lines that are
    neither a field nor a continuation are skipped rather than ending the block early.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    start = 0
    while start < len(lines) and not _HEADER_LINE_RE.match(lines[start]):
        start += 1
        if start > 20:
            return Message()
    block: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        if _HEADER_LINE_RE.match(line) or (line[:1] in (" ", "\t") and block):
            block.append(line)
    try:
        return email.message_from_string("\n".join(block) + "\n\n", policy=email.policy.compat32)
    except Exception:  # pragma: no cover
        return Message()


def message_ids(value: str) -> list[str]:
    """Message-IDs in a header value, each normalised to ``<id@host>``."""
    found = [f"<{m}>" for m in _MSGID_RE.findall(value or "")]
    if not found and value and "@" in value and " " not in value.strip():
        found = [f"<{value.strip().strip('<>')}>"]
    return found


__all__ = [
    "as_text",
    "content_type",
    "decode_bytes",
    "decode_value",
    "header",
    "headers",
    "html_to_text",
    "iter_parts",
    "message_ids",
    "notification_texts",
    "original_parts",
    "parse",
    "parse_headers_text",
    "report_parts",
]
