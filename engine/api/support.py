"""Request plumbing shared by the routers: auth, JSON bodies, size limit, idempotency, rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from engine.api.idempotency import PENDING, IdempotencyRecords
from engine.errors import (
    BadRequest,
    CampaignInvalid,
    Conflict,
    EngineError,
    InvalidState,
    NoPendingEnrollments,
    NotFound,
    PlanLimitReached,
    SecretKeyMismatch,
    ValidationFailed,
)
from events import context

DEFAULT_MAX_BODY = 10 * 1024 * 1024
MAX_INT = 2**63 - 1
"""The largest integer any request may carry: SQLite, PostgreSQL ``bigint`` and orjson stop there."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON body may have. Real bodies (a filter tree nested a
dozen times) stay far below it; thousands of levels would otherwise reach Python's recursion limit
in the parser or in pydantic and answer a 500."""
MAX_PAGE = MAX_INT // 200
"""The last page any listing answers: beyond it, ``(page - 1) * per_page`` overflows SQL's OFFSET."""
_INTEGER = re.compile(r"[+-]?\d+")


class Unauthorized(EngineError):
    """No API key, or one that is unknown or revoked: an error of the HTTP edge only."""

    code = "unauthorized"


class RateLimited(EngineError):
    """Too many requests (per key, or failed keys per client); ``details.retry_after`` in seconds."""

    code = "rate_limited"


class PayloadTooLarge(EngineError):
    """A request body over the configured limit."""

    code = "payload_too_large"


#: The one mapping of errors to HTTP statuses, by class (the closest class in an error's MRO wins).
#: Domain errors (``engine/errors.py``) know nothing of HTTP; this table is where they get a status.
HTTP_STATUS: dict[type[EngineError], int] = {
    EngineError: 400,
    BadRequest: 400,
    Unauthorized: 401,
    PlanLimitReached: 402,
    NotFound: 404,
    InvalidState: 409,
    Conflict: 409,
    PayloadTooLarge: 413,
    ValidationFailed: 422,
    CampaignInvalid: 422,
    NoPendingEnrollments: 422,
    RateLimited: 429,
    SecretKeyMismatch: 500,
}


def http_status(exc: EngineError) -> int:
    """The status of ``exc`` from :data:`HTTP_STATUS` (an error class not listed takes its parent's)."""
    for cls in type(exc).__mro__:
        if issubclass(cls, EngineError) and cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return HTTP_STATUS[EngineError]


def error_response(exc: EngineError) -> JSONResponse:
    """The error envelope with the status of :data:`HTTP_STATUS` and the headers HTTP asks for.

    ``Retry-After`` on 429; ``WWW-Authenticate: Bearer`` on 401, which RFC 9110 (section 15.5.2)
    requires of every 401 and RFC 6750 names for bearer tokens: it tells a client which scheme to use.
    """
    headers = {}
    if isinstance(exc, RateLimited) and "retry_after" in exc.details:
        headers["Retry-After"] = str(exc.details["retry_after"])  # RFC 9110: whole seconds
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                        status_code=http_status(exc), headers=headers)


async def read_body(request: Request) -> bytes:
    limit = int(request.app.state.max_body)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _out_of_range(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"field": field, "message": message}])


def _parse_int(text: str) -> int:
    """JSON integers beyond 64 bits are refused here: stored events and SQL columns cannot hold them."""
    if len(text.lstrip("+-")) > 19 or abs(int(text)) > MAX_INT:
        raise _out_of_range("body", f"integer {text[:30]} is out of range (at most 2^63 - 1 in magnitude)")
    return int(text)


def _parse_float(text: str) -> float:
    """``1e999`` parses to infinity: refused like the ``Infinity`` literal."""
    value = float(text)
    if not math.isfinite(value):
        raise _out_of_range("body", f"number {text[:30]} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259); Python's parser accepts them."""
    raise _out_of_range("body", f"{name} is not a valid JSON number")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit``, walked without recursion."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


NUL = "\x00"
MAX_NUL_FIELDS = 20
"""At most this many fields are named in one refusal: a body of many NULs gets a bounded answer."""
_NUL_MESSAGE = "contains a NUL character (U+0000), which text fields cannot hold"


def _field_name(path: tuple[str, ...]) -> str:
    """A dotted field path as validation errors name fields, a NUL shown escaped (``\\u0000``)."""
    return ".".join(path).replace(NUL, "\\u0000") or "body"


def _nul_fields(value: Any) -> list[str]:
    """The fields (dotted paths) of a parsed body whose key or string value holds a NUL, walked
    without recursion; a key holding one is named by its own path."""
    found: list[str] = []
    pending: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while pending and len(found) < MAX_NUL_FIELDS:
        item, path = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                found.append(_field_name(path))
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if NUL in key:
                    found.append(_field_name((*path, key)))
                else:
                    pending.append((child, (*path, key)))
        elif isinstance(item, list):
            pending.extend((child, (*path, str(index))) for index, child in reversed(list(enumerate(item))))
    return sorted(found[:MAX_NUL_FIELDS])


def parse_json(raw: bytes) -> Any:
    """Parse a request body: invalid JSON is 400; valid JSON the engine cannot hold is 422.

    422 ``validation_failed`` (before anything is written) for ``NaN``/``Infinity``, numbers
    beyond 64 bits or infinite floats, nesting deeper than :data:`MAX_JSON_DEPTH`, and a NUL
    character (``\u0000``) in any key or string at any depth: PostgreSQL's text cannot hold one
    (it answered 500) while SQLite stored it, so both backends now refuse it alike, naming the field.
    """
    try:
        body = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise _out_of_range("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise _out_of_range("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    # A NUL reaches a parsed string only as the escape \u0000 (strict parsing refuses a raw one), so
    # a body with neither that text nor a zero byte (UTF-16/32 text has some) skips the walk: 14 ms
    # for a 10,000-contact import.
    fields = _nul_fields(body) if b"\\u0000" in raw or b"\x00" in raw else []
    if fields:
        raise ValidationFailed([{"field": field, "message": f"{field} {_NUL_MESSAGE}"} for field in fields])
    return body


def _nul_parameter_errors(request: Request) -> list[dict[str, str]]:
    """A NUL character in a query parameter (name or value) or a path parameter, as errors.

    PostgreSQL's text cannot hold U+0000 (a filter or id carrying one answered 500) while SQLite
    compares it; refusing it at the edge gives both backends one answer and covers routes added later.
    """
    errors = []
    for name, value in [*request.query_params.multi_items(), *request.path_params.items()]:
        if NUL in name or NUL in str(value):
            field = _field_name((name,))
            errors.append({"field": field, "message": f"{field} {_NUL_MESSAGE}"})
    return errors[:MAX_NUL_FIELDS]


def check_query_numbers(request: Request) -> None:
    """App-wide dependency: an integer query parameter beyond 2^63 - 1 is 422, whatever the route.

    The engine checks each parameter's own range (page >= 1, days 1..90, ...) but hands the
    value to SQL, where a 20-digit number raised ``OverflowError`` (a 500). Checking every
    integer-looking parameter here covers routes added later too. A NUL character in any query or
    path parameter is refused here as well (:func:`_nul_parameter_errors`), before the route runs.
    """
    errors = _nul_parameter_errors(request)
    for name, value in request.query_params.multi_items():
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            continue
        limit = MAX_PAGE if name == "page" else MAX_INT
        if len(text.lstrip("+-")) > 19 or abs(int(text)) > limit:
            errors.append({"field": name, "message": f"{name} is out of range (at most {limit} in magnitude)"})
    if errors:
        raise ValidationFailed(errors)


async def json_body(request: Request, *, allow_empty: bool = False) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("a JSON body is required")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest("content type must be application/json")
    return parse_json(raw)


class RateLimiter:
    """A token bucket per API key, on the engine's clock (so tests need no sleeping)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, Any]] = {}

    def check_only(self, key: str, now: Any) -> None:
        """Refuse while `key`'s bucket is empty, without taking a token (for counting failures only)."""
        if self.per_minute <= 0 or key not in self._buckets:
            return
        tokens, last = self._buckets[key]
        tokens = min(float(self.per_minute), tokens + max((now - last) / timedelta(minutes=1), 0.0) * self.per_minute)
        if tokens < 1:
            raise RateLimited("too many failed API keys from this client",
                              {"retry_after": max(1, math.ceil((1 - tokens) * 60 / self.per_minute))})

    def check(self, key: str, now: Any) -> None:
        if self.per_minute <= 0:
            return
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        elapsed = max((now - last) / timedelta(minutes=1), 0.0)
        tokens = min(float(self.per_minute), tokens + elapsed * self.per_minute)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) * 60 / self.per_minute)
            raise RateLimited("too many requests", {"retry_after": max(1, wait)})
        self._buckets[key] = (tokens - 1, now)


async def workspace_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    key = key.strip()
    client = request.client.host if request.client else "unknown"
    failures: RateLimiter = request.app.state.key_failures
    failures.check_only(client, request.app.state.engine.now())  # a client guessing keys is slowed down
    owner = await request.app.state.engine.authenticate_key(key)
    if owner is None:
        failures.check(client, request.app.state.engine.now())
        raise Unauthorized("unknown API key")
    request.state.api_key_id = owner.key_id  # the actor of what this request appends
    route = getattr(request.scope.get("route"), "path", None)
    context.note(actor=f"api_key:{owner.key_id}", route=f"{request.method} {route}" if route else None)
    request.app.state.limiter.check(hashlib.sha256(key.encode()).hexdigest(), request.app.state.engine.now())
    return str(owner.workspace_id)


IDEMPOTENCY_WAIT_SECONDS = 30.0
"""How long a duplicate waits for the first request with its key to answer before giving up with 409.

Longer than any command should take (a large CSV import included), short enough that a client
never hangs on a request whose first run is stuck."""
IDEMPOTENCY_POLL_SECONDS = (0.005, 0.25)
"""First and largest pause between looks at a pending key: the backoff doubles from one to the other."""
IDEMPOTENCY_STALE_AFTER = timedelta(minutes=10)
"""A claim pending this long belongs to a process that died mid-request; the next request takes it over."""


def _replay(found: tuple[str, int, str], digest: str) -> JSONResponse:
    """The stored first response, or 409 if the key was first used with another request."""
    if found[0] != digest:
        raise Conflict("idempotency_conflict", "this Idempotency-Key was used with another request")
    return JSONResponse(json.loads(found[2]), status_code=found[1], headers={"Idempotent-Replayed": "true"})


async def idempotent(request: Request, ws: str, body: Any, run: Callable[[], Awaitable[tuple[int, Any]]]
                     ) -> JSONResponse:
    """Replay the first response for a repeated Idempotency-Key; 409 if the body differs.

    The key is claimed (a pending row, unique per workspace and key) before ``run`` starts, so of
    concurrent requests with one key exactly one runs the command. The others wait for its
    response and replay it, refusals included (the README promises refused requests replay); one
    with another body is refused at once. A command that dies without a response (an unexpected
    exception, a cancelled request) releases the claim: nothing was committed, so a retry may run.
    """
    key = request.headers.get("idempotency-key")
    if not key:
        status, payload = await run()
        return JSONResponse(payload, status_code=status)
    if len(key) > 255:
        raise BadRequest("Idempotency-Key is longer than 255 characters")
    records = IdempotencyRecords(request.app.state.engine.store)
    digest = hashlib.sha256(json.dumps([request.method, request.url.path, body], sort_keys=True,
                                       default=str).encode()).hexdigest()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IDEMPOTENCY_WAIT_SECONDS
    pause, longest = IDEMPOTENCY_POLL_SECONDS
    found = await records.claim(ws, key, digest, stale_after=IDEMPOTENCY_STALE_AFTER)
    while found is not None:  # someone else's: wait on reads, claim again only if it was released
        if found[1] != PENDING or found[0] != digest:
            return _replay(found, digest)
        if loop.time() >= deadline:
            raise Conflict("idempotency_conflict",
                           "a request with this Idempotency-Key is still in progress; retry later")
        await asyncio.sleep(pause)
        pause = min(pause * 2, longest)
        found = await records.lookup(ws, key)
        if found is None:
            found = await records.claim(ws, key, digest, stale_after=IDEMPOTENCY_STALE_AFTER)
    try:
        status, payload = await run()
    except EngineError as exc:
        status = http_status(exc)
        payload = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    except BaseException:
        # Shielded: a cancelled request must still free its key, else retries wait out the stale age.
        await asyncio.shield(records.release(ws, key, digest))
        raise
    await records.complete(ws, key, digest, status, json.dumps(payload))
    return JSONResponse(payload, status_code=status)


async def post_json(request: Request, ws: str, status: int, call: Callable[[Any], Awaitable[Any]],
                    allow_empty: bool = False) -> JSONResponse:
    """The shape of every JSON POST: read the body, run the engine call, honour Idempotency-Key."""
    body = await json_body(request, allow_empty=allow_empty)
    if not isinstance(body, dict):  # every such route takes an object; some engine calls assume one
        raise ValidationFailed([{"field": "body", "message": "a JSON object is required"}])

    async def run() -> tuple[int, Any]:
        return status, await call(body)

    return await idempotent(request, ws, body, run)
