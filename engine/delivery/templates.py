"""Merge tags for subjects and bodies: safe substitution, never evaluation.

A template is plain text (or HTML) with tags such as ``{{first_name}}``, ``{{custom.plan}}`` and
``{{first_name|there}}`` (a fallback used when the contact has no value). Tags are found with one
regular expression and replaced by looked-up strings; nothing in a template is ever evaluated, so a
template cannot run code and a contact's data cannot change the template's structure.

Values are HTML-escaped when rendering HTML. Header values additionally lose every control
character (:func:`strip_controls`): a first name such as ``"X\\r\\nBcc: a@b.c"`` must never be able
to add a header line, whatever the email library does when folding (CVE-2024-6923).
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KNOWN_FIELDS",
    "MergeTag",
    "find_tags",
    "render",
    "render_header",
    "strip_controls",
    "validate_template",
]

#: The contact fields a tag may name directly; ``custom.KEY`` names a custom field.
KNOWN_FIELDS: frozenset[str] = frozenset({"first_name", "last_name", "email", "company"})

# One tag: ``{{ name }}`` or ``{{ name | fallback }}``; the fallback runs to the closing braces and
# may not contain braces itself. Whitespace around the name and the fallback is ignored.
_TAG = re.compile(r"\{\{\s*(?P<name>[^{}|]*?)\s*(?:\|(?P<fallback>[^{}]*?))?\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")
_CUSTOM = re.compile(r"custom\.(?P<key>[\w\-]+)\Z")

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
        return self.field in KNOWN_FIELDS or _CUSTOM.match(self.field) is not None

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


def _lookup(contact: Mapping[str, Any], field: str) -> str:
    """The contact's value for a tag field as text ('' when absent)."""
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
        value = contact.get(field)
    else:
        return ""
    if value is None or isinstance(value, Mapping | list | tuple | set):
        return ""
    return str(value)


def render(text: str, contact: Mapping[str, Any], *, html: bool) -> str:
    """Replace the known tags in ``text`` with the contact's values.

    A missing or blank value gives the tag's fallback, or the empty string. With ``html=True`` the
    contact's values are HTML-escaped (a company called ``<b>`` stays text); the fallback is part of
    the author's template and is inserted as written. Unknown tags are left untouched: templates
    are validated before launch, and leaving them visible is more honest than guessing.
    """
    if "{{" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        field = match.group("name")
        if field not in KNOWN_FIELDS and _CUSTOM.match(field) is None:
            return match.group(0)
        value = _lookup(contact, field)
        if not value.strip():
            fallback = match.group("fallback")
            return "" if fallback is None else fallback.strip()
        return _html.escape(value, quote=True) if html else value

    return _TAG.sub(substitute, text)


def render_header(text: str, contact: Mapping[str, Any]) -> str:
    """Render a header template (a subject) and strip every control character from the result.

    The stripping applies to the whole rendered value, the template's own text included, so the
    value can be placed in a header line as it is. Surrounding whitespace is trimmed.
    """
    return strip_controls(render(text, contact, html=False)).strip()
