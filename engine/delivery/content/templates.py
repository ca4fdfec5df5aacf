"""Merge tags for subjects and bodies: safe substitution, never evaluation.

A template is plain text (or HTML) with tags such as ``{{first_name}}``, ``{{custom.plan}}`` and
``{{first_name|there}}`` (a fallback used when the contact has no value). Tags are found with one
regular expression and replaced by looked-up strings; nothing in a template is ever evaluated, so a
template cannot run code and a contact's data cannot change the template's structure.

Values are HTML-escaped when rendering HTML. Header values additionally lose every control
character (:func:`strip_controls`): a first name such as ``"X\\r\\nBcc: a@b.c"`` must never be able
to add a header line, whatever the email library does when folding (CVE-2024-6923).

A value inside a URL is percent-encoded instead (``?c={{company}}`` with ``AT&T <b>`` gives
``?c=AT%26T%20%3Cb%3E``), so contact data stays one query value and the link keeps working. "Inside
a URL" means after the start of an ``href``/``src`` attribute value, or within an ``http(s)://``
run of the text; a tag that *starts* an ``href`` (``href="{{custom.link}}"``) is the URL itself
and is inserted as usual (HTML-escaped in HTML).

Each template text is parsed once (:func:`parse_template`, cached): the send path renders the
same few step texts for thousands of contacts, and finding tags and URL contexts is the costly
part.
"""

from __future__ import annotations

import functools
import html as _html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "ALIASES",
    "KNOWN_FIELDS",
    "MergeTag",
    "Template",
    "find_tags",
    "parse_template",
    "render",
    "render_header",
    "strip_controls",
    "validate_template",
]

#: Other spellings of contact fields (section 6 of the contract): camelCase, as other tools write them.
ALIASES: Final[Mapping[str, str]] = {"firstName": "first_name", "lastName": "last_name", "companyName": "company"}

#: The fields a tag may name directly; ``custom.KEY`` names a custom field. ``unsubscribe_url`` is
#: not a contact column: the caller puts the contact's one-click page into the merge data.
KNOWN_FIELDS: frozenset[str] = frozenset({"first_name", "last_name", "email", "company", "unsubscribe_url",
                                          *ALIASES})

# One tag: ``{{ name }}`` or ``{{ name | fallback }}``; the fallback runs to the closing braces and
# may not contain braces itself. Whitespace around the name and the fallback is ignored.
_TAG = re.compile(r"\{\{\s*(?P<name>[^{}|]*?)\s*(?:\|(?P<fallback>[^{}]*?))?\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")
_CUSTOM = re.compile(r"custom\.(?P<key>[\w\-]+)\Z")

# Where a merge value is part of a URL (see the module docstring). Both are searched in a skeleton
# of the template in which every tag is one placeholder character, so a tag with a spaced fallback
# (``{{ company | your team }}``) still counts as one unbroken piece of the URL.
_PLACEHOLDER: Final = "\ue000"
_URL_ATTRIBUTE = re.compile(
    r"""\b(?:href|src)\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))""", re.IGNORECASE
)
_BARE_URL = re.compile(r"""https?://[^\s<>"']+""", re.IGNORECASE)
# Characters left as they are in a percent-encoded value: RFC 3986 unreserved characters (always
# kept by ``quote``) and ``@``, which means nothing special after the authority and keeps
# ``mailto:{{email}}`` readable. Everything else, ``/ ? & = #`` included, is data, not structure.
_URL_SAFE: Final = "@"

# C0 controls, DEL, the C1 controls and the Unicode line/paragraph separators: everything some
# reader could take for a line break or that has no business in a header.
_CONTROLS = re.compile("[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class MergeTag:
    """One tag found in a template: where it is, what it names and its fallback, if any.

    ``field`` is the name as written (``"first_name"``, ``"custom.plan"``); ``known`` says whether
    it is one the engine can fill, so callers can report unknown tags without re-parsing.
    """

    raw: str
    field: str
    fallback: str | None
    start: int
    end: int

    @property
    def known(self) -> bool:
        return _known(self.field)

    @property
    def custom_key(self) -> str | None:
        match = _CUSTOM.match(self.field)
        return match.group("key") if match else None


def strip_controls(value: str) -> str:
    """Remove every control character (< 0x20, 0x7f, C1, U+2028/9) from a header value.

    Removal rather than replacement by a space keeps the rule simple and obvious: nothing that a
    parser could read as a line break survives, so no header can be injected.
    """
    return _CONTROLS.sub("", value)


def find_tags(text: str) -> list[MergeTag]:
    """Every well-formed ``{{...}}`` tag in ``text``, in order, known or not."""
    tags: list[MergeTag] = []
    for match in _TAG.finditer(text):
        fallback = match.group("fallback")
        tags.append(
            MergeTag(
                raw=match.group(0),
                field=match.group("name"),
                fallback=None if fallback is None else fallback.strip(),
                start=match.start(),
                end=match.end(),
            )
        )
    return tags


def validate_template(text: str) -> list[str]:
    """Problems that make ``text`` unusable as a template; an empty list means it is fine.

    Reports unknown tags (``{{frist_name}}``), empty tags and unbalanced ``{{`` / ``}}``. Single
    braces are ordinary text (CSS in an HTML body uses them), so only doubled braces count.
    """
    problems: list[str] = []
    depth_open: int | None = None
    for match in _BRACES.finditer(text):
        if match.group(0) == "{{":
            if depth_open is not None:
                problems.append(f"unbalanced braces: '{{{{' at {depth_open} is never closed")
            depth_open = match.start()
        elif depth_open is None:
            problems.append(f"unbalanced braces: '}}}}' at {match.start()} has no opening '{{{{'")
        else:
            depth_open = None
    if depth_open is not None:
        problems.append(f"unbalanced braces: '{{{{' at {depth_open} is never closed")
    for tag in find_tags(text):
        if not tag.field:
            problems.append(f"empty merge tag {tag.raw!r}")
        elif not tag.known:
            problems.append(f"unknown merge tag {tag.raw!r}")
    return problems


def _known(field: str) -> bool:
    return field in KNOWN_FIELDS or _CUSTOM.match(field) is not None


def _lookup(contact: Mapping[str, Any], field: str) -> str:
    """The contact's value for a (known) tag field as text ('' when absent)."""
    custom = _CUSTOM.match(field)
    if custom is not None:
        key = custom.group("key")
        fields = contact.get("custom_fields")
        if fields is None:
            fields = contact.get("custom")
        if not isinstance(fields, Mapping):
            return ""
        value = fields.get(key)
        if value is None:
            # CSV headers are often capitalised differently from the tag the author typed.
            folded = key.casefold()
            for name, candidate in fields.items():
                if isinstance(name, str) and name.casefold() == folded:
                    value = candidate
                    break
    elif field in KNOWN_FIELDS:
        value = contact.get(ALIASES.get(field, field))
    else:
        return ""
    if value is None or isinstance(value, Mapping | list | tuple | set):
        return ""
    return str(value)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One known tag of a parsed template, and whether its value goes into a URL."""

    field: str
    fallback: str | None
    in_url: bool


@dataclass(frozen=True, slots=True)
class Template:
    """A template parsed once: its literal text and its known tags, in order.

    Unknown tags are kept as literal text (they are shown as written, see :func:`render`). Made by
    :func:`parse_template`, which caches it per text, and rendered any number of times.
    """

    parts: tuple[str | _Slot, ...]

    def render(self, contact: Mapping[str, Any], *, html: bool) -> str:
        """The template with each known tag replaced by the contact's value (see :func:`render`)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(contact, part.field)
            if not value.strip():
                if part.fallback is None:
                    continue
                # The fallback stands for a value: inside a URL it is encoded like one, elsewhere
                # it is the author's own text and goes in as written.
                out.append(quote(part.fallback, safe=_URL_SAFE) if part.in_url else part.fallback)
            elif part.in_url:
                out.append(quote(value, safe=_URL_SAFE))
            else:
                out.append(_html.escape(value, quote=True) if html else value)
        return "".join(out)


def _url_positions(skeleton: str) -> set[int]:
    """Offsets in ``skeleton`` that lie inside a URL, past its first character."""
    inside: set[int] = set()
    for match in _URL_ATTRIBUTE.finditer(skeleton):
        group = next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)
        value_start, value_end = match.span(group)
        value = match.group(group)
        first = value_start + len(value) - len(value.lstrip())
        inside.update(range(first + 1, value_end))
    for match in _BARE_URL.finditer(skeleton):
        inside.update(range(match.start() + 1, match.end()))
    return inside


@functools.lru_cache(maxsize=1024)
def parse_template(text: str) -> Template:
    """``text`` split into literal text and tags, each tag knowing whether it sits in a URL.

    Cached per text: a campaign step is parsed once, however many contacts it is rendered for.
    Parsing never fails; problems are :func:`validate_template`'s business.
    """
    tags = find_tags(text)
    if not tags:
        return Template(parts=(text,) if text else ())
    # Offsets of the tags in the skeleton, where each tag has shrunk to one placeholder character.
    offsets: list[int] = []
    removed = 0
    for tag in tags:
        offsets.append(tag.start - removed)
        removed += len(tag.raw) - 1
    in_url = _url_positions(_TAG.sub(_PLACEHOLDER, text))
    parts: list[str | _Slot] = []
    literal: list[str] = []
    cursor = 0
    for tag, offset in zip(tags, offsets, strict=True):
        literal.append(text[cursor : tag.start])
        cursor = tag.end
        if not _known(tag.field):
            literal.append(tag.raw)
            continue
        text_before = "".join(literal)
        if text_before:
            parts.append(text_before)
        literal = []
        parts.append(_Slot(field=tag.field, fallback=tag.fallback, in_url=offset in in_url))
    literal.append(text[cursor:])
    tail = "".join(literal)
    if tail:
        parts.append(tail)
    return Template(parts=tuple(parts))


def render(text: str, contact: Mapping[str, Any], *, html: bool) -> str:
    """Replace the known tags in ``text`` with the contact's values.

    A missing or blank value gives the tag's fallback, or the empty string. With ``html=True`` the
    contact's values are HTML-escaped (a company called ``<b>`` stays text); the fallback is part of
    the author's template and is inserted as written. Inside a URL, values and fallbacks are
    percent-encoded instead. Unknown tags are left untouched: templates are validated before
    launch, and leaving them visible is more honest than guessing. Substitution is one pass: a
    value that looks like a tag stays text.
    """
    if "{{" not in text:
        return text
    return parse_template(text).render(contact, html=html)


def render_header(text: str, contact: Mapping[str, Any]) -> str:
    """Render a header template (a subject) and strip every control character from the result.

    The stripping applies to the whole rendered value, the template's own text included, so the
    value can be placed in a header line as it is. Surrounding whitespace is trimmed.
    """
    return strip_controls(render(text, contact, html=False)).strip()
