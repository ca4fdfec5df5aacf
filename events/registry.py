"""Event base class, the registry of type names, (de)serialisation and upcasters.

Stored events carry a stable type string and a schema ``type_version``; an old payload is brought
up to the current shape by pure dict -> dict upcasters, one version step at a time, on read.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every domain event: frozen, keyword-only, past tense.

    ``TYPE`` is the stable name of the contract's catalog, ``VERSION`` the schema version.
    ``PERSONAL`` names the fields holding personal data: the store encrypts them with the key of
    the subject named by ``SUBJECT`` (a field holding a contact id, usually), so that destroying
    that key erases the data while the event stays in the log.
    """

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    PERSONAL: ClassVar[tuple[str, ...]] = ()
    SUBJECT: ClassVar[str] = "contact_id"


E = TypeVar("E", bound=type[Event])

_BY_TYPE: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}
_DATETIME_FIELDS: dict[type[Event], frozenset[str]] = {}
_TUPLE_FIELDS: dict[type[Event], frozenset[str]] = {}
_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}
_FIELD_SET: dict[type[Event], frozenset[str]] = {}
_PLAIN: set[type[Event]] = set()  # classes encode_data may hand to orjson
_PLAIN_ONCE_ENCRYPTED: set[type[Event]] = set()  # classes encode_encrypted may hand to orjson
_FAST_NEW: dict[type[Event], Callable[[dict[str, Any]], Event]] = {}


class UnknownEventType(KeyError):
    """A stored event names a type this code does not know."""


def register(cls: E) -> E:
    """Class decorator: add an event class to the registry under its ``TYPE``."""
    if not cls.TYPE:
        raise ValueError(f"{cls.__name__} has no TYPE")
    if cls.TYPE in _BY_TYPE and _BY_TYPE[cls.TYPE] is not cls:
        raise ValueError(f"event type {cls.TYPE!r} registered twice")
    _BY_TYPE[cls.TYPE] = cls
    hints = typing.get_type_hints(cls)
    _DATETIME_FIELDS[cls] = frozenset(
        f.name for f in dataclasses.fields(cls) if "datetime" in str(hints.get(f.name, ""))
    )
    _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    _FIELD_SET[cls] = frozenset(_FIELD_NAMES[cls])
    if all(_is_plain(hints[f.name]) for f in dataclasses.fields(cls)):
        _PLAIN.add(cls)
    if all(f.name in cls.PERSONAL or _is_plain(hints[f.name]) for f in dataclasses.fields(cls)):
        _PLAIN_ONCE_ENCRYPTED.add(cls)
    if hasattr(cls, "__post_init__") or not hasattr(cls, "__slots__"):
        raise ValueError(f"{cls.__name__}: events are slotted dataclasses without __post_init__")
    _FAST_NEW[cls] = _fast_new(cls)
    _TUPLE_FIELDS[cls] = frozenset(
        f.name for f in dataclasses.fields(cls) if str(hints.get(f.name, "")).startswith("tuple")
    )
    return cls


def upcaster(type_name: str, from_version: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a pure function turning the ``from_version`` payload into ``from_version + 1``."""

    def wrap(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return wrap


def event_class(type_name: str) -> type[Event]:
    try:
        return _BY_TYPE[type_name]
    except KeyError as exc:
        raise UnknownEventType(type_name) from exc


def all_types() -> dict[str, type[Event]]:
    return dict(_BY_TYPE)


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: the one time format of the log and the API."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """The inverse of :func:`format_time` (any ISO 8601 offset is accepted and turned into UTC)."""
    parsed = datetime.fromisoformat(value)  # Python 3.11 reads the ``Z`` suffix itself
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_STDLIB_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=_default)
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_CHECK_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
SMALLEST_INT, LARGEST_INT = -(2**63), 2**64 - 1
"""The integers :func:`loads` (orjson) reads back exactly; beyond them it would answer a float."""


class IntegerOutOfRange(ValueError):
    """A value to be written to the log holds an integer the log could not read back exactly.

    orjson, which reads the log, turns an integer outside ``-2^63 .. 2^64 - 1`` into a float
    (``-2^63 - 1`` came back as ``-9.223372036854776e18``). The contract's integers are 64-bit, so
    such a value is refused when it is written, naming where it is, instead of changing on read.
    """


def _wide_integer(value: Any, path: str) -> tuple[str, int] | None:
    """Where (a dotted path) the first integer outside the log's range is in ``value``, if anywhere."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not SMALLEST_INT <= item <= LARGEST_INT:
                return where, item
        elif isinstance(item, dict):
            pending.extend((child, f"{where}.{key}") for key, child in item.items())
        elif isinstance(item, list | tuple):
            pending.extend((child, f"{where}.{index}") for index, child in enumerate(item))
    return None


def _refuse_wide_integers(value: Any, what: str) -> None:
    """Raise :class:`IntegerOutOfRange` if ``value`` holds an integer beyond the log's range.

    orjson's encoder refuses exactly the integers its decoder cannot read back, so it is the check
    (about a microsecond); the walk that names the field runs only when it refuses. Anything else
    orjson refuses (a type only ``_default`` or the standard library takes) is left to the encoder.
    """
    try:
        orjson.dumps(value, default=_default, option=_CHECK_OPTIONS)
    except orjson.JSONEncodeError:
        _raise_if_wide(value, what)


def _raise_if_wide(value: Any, what: str) -> None:
    found = _wide_integer(value, what)
    if found is not None:
        where, number = found
        raise IntegerOutOfRange(f"{where} is {number}, outside the 64-bit integers the event log holds "
                                f"({SMALLEST_INT} to {LARGEST_INT})")


def dumps(value: Any) -> str:
    """The log's JSON: compact, keys sorted at every level, UTF-8 kept, datetimes in :func:`format_time`.

    An integer :func:`loads` could not read back exactly is refused (:class:`IntegerOutOfRange`).
    """
    _refuse_wide_integers(value, "value")
    return _STDLIB_ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    """Parse the log's JSON: orjson (several times faster), the standard library for what it refuses
    (the ``Infinity``/``NaN`` tokens the standard library writes for non-finite floats)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def encode_data(event: Event) -> str:
    """``dumps(to_data(event))`` in one pass: the stored payload of an event without personal fields.

    Events whose fields are all strings, integers, booleans, datetimes or tuples of those (the
    hot ones: scheduling, enrolling) go through orjson, several times faster and, for exactly those
    types, byte-for-byte the standard library's text. Others (floats, free-form dicts) keep the
    standard library, whose spelling of floats and non-finite values orjson does not share.

    An integer :func:`loads` could not read back exactly (outside ``-2^63 .. 2^64 - 1``) is
    refused with :class:`IntegerOutOfRange` naming the event type and field: written, it would
    come back from the log as a float.
    """
    cls = type(event)
    payload = {name: getattr(event, name) for name in _FIELD_NAMES[cls]}
    if cls in _PLAIN:
        try:
            return orjson.dumps(payload, default=_default, option=_ORJSON_OPTIONS).decode()
        except orjson.JSONEncodeError:  # the only value a plain event's orjson refuses: a wide integer
            _raise_if_wide(payload, cls.TYPE)
    else:
        _refuse_wide_integers(payload, cls.TYPE)
    return _STDLIB_ENCODER.encode(payload)


def encode_encrypted(cls: type[Event], data: dict[str, Any]) -> str:
    """``dumps(data)`` for the payload of a ``cls`` event whose personal fields the vault encrypted.

    Each personal field is then a ``pii:`` token or None, so when every other field is of the
    plain types (:func:`encode_data`'s rule) orjson writes the standard library's text byte for byte,
    several times faster: a bulk import encodes one such payload per contact.
    """
    if cls in _PLAIN_ONCE_ENCRYPTED:
        try:
            return orjson.dumps(data, default=_default, option=_ORJSON_OPTIONS).decode()
        except orjson.JSONEncodeError:  # a wide integer: dumps names it
            pass
    return dumps(data)


_PLAIN_LEAVES = (str, int, bool, type(None), datetime)


def _is_plain(hint: Any) -> bool:
    """True for a type built only from str, int, bool, None and datetime (unions, ``tuple[X, ...]``)."""
    if hint in _PLAIN_LEAVES:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, tuple):
        return all(arg is Ellipsis or _is_plain(arg) for arg in typing.get_args(hint))
    return False


def to_data(event: Event) -> dict[str, Any]:
    """The JSON-ready payload of an event (datetimes as ISO strings)."""
    cls = type(event)
    dt_fields = _DATETIME_FIELDS[cls]
    out: dict[str, Any] = {}
    for name in _FIELD_NAMES[cls]:
        value = getattr(event, name)
        if name in dt_fields and isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def upcast(type_name: str, type_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Run the upcasters from ``type_version`` up to the class's current version."""
    cls = event_class(type_name)
    version = type_version
    while version < cls.VERSION:
        fn = _UPCASTERS.get((type_name, version))
        if fn is None:
            raise ValueError(f"no upcaster for {type_name} v{version}")
        data = fn(dict(data))
        version += 1
    return data


def from_data(type_name: str, type_version: int, data: dict[str, Any]) -> Event:
    """Rebuild an event object from a stored payload, upcasting old versions first."""
    return from_owned_data(event_class(type_name), type_version, dict(data))


def from_owned_data(cls: type[Event], type_version: int, data: dict[str, Any]) -> Event:
    """:func:`from_data` for a payload the caller owns (freshly parsed): converted in place, not copied."""
    if type_version != cls.VERSION:
        data = upcast(cls.TYPE, type_version, data)
    for key in _DATETIME_FIELDS[cls]:
        value = data.get(key)
        if isinstance(value, str):
            data[key] = parse_time(value)
    for key in _TUPLE_FIELDS[cls]:
        value = data.get(key)
        if isinstance(value, list):
            data[key] = tuple(value)
    if len(data) == len(_FIELD_NAMES[cls]):  # usually exactly the class's fields: set them directly
        try:
            return _FAST_NEW[cls](data)
        except KeyError:  # as many keys, not the same ones
            pass
    try:  # some fields left to their defaults
        return cls(**data)
    except TypeError:  # keys this code does not know (written by newer code): left out
        names = _FIELD_SET[cls]
        return cls(**{key: value for key, value in data.items() if key in names})


def _fast_new(cls: type[Event]) -> Callable[[dict[str, Any]], Event]:
    """A constructor for a payload holding exactly ``cls``'s fields, already converted.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` and parses
    its keyword arguments: about half of what reading an event costs. This sets the slots
    through their descriptors, which is what ``__init__`` ends up doing, and nothing else runs
    (events have no ``__post_init__``: :func:`register` checks). A property test builds every
    registered type both ways and compares them.
    """
    names = _FIELD_NAMES[cls]
    setters = {name: getattr(cls, name).__set__ for name in names}
    defaults = ", ".join(f"set_{i}=setters[{n!r}]" for i, n in enumerate(names))
    lines = [f"def make(data, new=object.__new__, cls=cls, {defaults}):", "    obj = new(cls)"]
    lines += [f"    set_{i}(obj, data[{n!r}])" for i, n in enumerate(names)]
    lines.append("    return obj")
    namespace: dict[str, Any] = {"cls": cls, "setters": setters}
    exec("\n".join(lines), namespace)  # noqa: S102  (generated from the class's own field names)
    return namespace["make"]  # type: ignore[no-any-return]
