"""Request plumbing shared by the routers: auth, JSON bodies, size limit, idempotency, rate limits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from engine.errors import BadRequest, Conflict, EngineError, PayloadTooLarge, RateLimited, Unauthorized

DEFAULT_MAX_BODY = 10 * 1024 * 1024


def error_response(exc: EngineError) -> JSONResponse:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                        status_code=exc.status)


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


async def json_body(request: Request, *, allow_empty: bool = False) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("a JSON body is required")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest("content type must be application/json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


class RateLimiter:
    """A token bucket per API key, on the engine's clock (so tests need no sleeping)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, Any]] = {}

    def check(self, key: str, now: Any) -> None:
        if self.per_minute <= 0:
            return
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        elapsed = max((now - last) / timedelta(minutes=1), 0.0)
        tokens = min(float(self.per_minute), tokens + elapsed * self.per_minute)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited("too many requests")
        self._buckets[key] = (tokens - 1, now)


async def workspace_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    key = key.strip()
    owner = await request.app.state.engine.authenticate_key(key)
    if owner is None:
        raise Unauthorized("unknown API key")
    request.state.api_key_id = owner.key_id  # the actor of what this request appends
    request.app.state.limiter.check(hashlib.sha256(key.encode()).hexdigest(), request.app.state.engine.now())
    return str(owner.workspace_id)


async def idempotent(request: Request, ws: str, body: Any, run: Callable[[], Awaitable[tuple[int, Any]]]
                     ) -> JSONResponse:
    """Replay the first response for a repeated Idempotency-Key; 409 if the body differs."""
    key = request.headers.get("idempotency-key")
    if not key:
        status, payload = await run()
        return JSONResponse(payload, status_code=status)
    if len(key) > 255:
        raise BadRequest("Idempotency-Key is longer than 255 characters")
    engine = request.app.state.engine
    digest = hashlib.sha256(json.dumps([request.method, request.url.path, body], sort_keys=True,
                                       default=str).encode()).hexdigest()
    found = await engine.store.idempotent_response(ws, key)
    if found is not None:
        if found[0] != digest:
            raise Conflict("idempotency_conflict", "this Idempotency-Key was used with another request")
        return JSONResponse(json.loads(found[2]), status_code=found[1], headers={"Idempotent-Replayed": "true"})
    try:
        status, payload = await run()
    except EngineError as exc:
        status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    await engine.store.save_idempotent_response(ws, key, digest, status, json.dumps(payload))
    return JSONResponse(payload, status_code=status)


async def post_json(request: Request, ws: str, status: int, call: Callable[[Any], Awaitable[Any]],
                    allow_empty: bool = False) -> JSONResponse:
    """The shape of every JSON POST: read the body, run the engine call, honour Idempotency-Key."""
    body = await json_body(request, allow_empty=allow_empty)

    async def run() -> tuple[int, Any]:
        return status, await call(body)

    return await idempotent(request, ws, body, run)
