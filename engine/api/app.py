"""The FastAPI application factory: error mapping, limits and the routers."""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api import api_keys, campaigns, docs, management, ops, tracking
from engine.api import reports as report_routes
from engine.api.openapi import build_openapi
from engine.api.support import DEFAULT_MAX_BODY, RateLimiter, check_query_numbers, error_response
from engine.errors import EngineError
from events.context import acting

log = structlog.get_logger("campaign_engine.api")


def request_id_of(request: Request) -> str:
    """The request's id when the logging middleware gave it one, else a fresh one for this answer."""
    found = getattr(request.state, "request_id", None)
    if not found:
        found = uuid.uuid4().hex
        request.state.request_id = found
    return str(found)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first route's."""
    methods: set[str] = set()
    for pattern, route_methods in request.app.state.route_methods:
        if pattern.match(request.url.path):
            methods |= route_methods
    return ", ".join(sorted(methods))


def create_app(engine: Any, *, max_body_bytes: int = DEFAULT_MAX_BODY, rate_limit_per_minute: int = 6000,
               failed_keys_per_minute: int = 20) -> FastAPI:
    """Build the ASGI app serving the contract's REST API on top of a running engine."""
    app = FastAPI(title="campaign-engine", version="0.1.0",
                  description="Event-sourced sending engine for multi-step email campaigns.",
                  dependencies=[Depends(check_query_numbers)], docs_url=None, redoc_url=None)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    docs.mount(app)
    app.state.engine = engine
    app.state.max_body = max_body_bytes
    app.state.limiter = RateLimiter(rate_limit_per_minute)
    # Unknown keys per client address: a handful of typos pass, a scan is answered 429 + Retry-After.
    app.state.key_failures = RateLimiter(failed_keys_per_minute)

    @app.exception_handler(EngineError)
    async def _engine_error(_request: Request, exc: EngineError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"error": {"code": "validation_failed", "message": "validation failed",
                                       "details": {"errors": errors}}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "bad_request")
        # exc.headers carries Allow on a 405 (RFC 9110 requires it) and WWW-Authenticate where set
        return JSONResponse({"error": {"code": code, "message": str(exc.detail), "details": {}}},
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, exc: OverflowError) -> JSONResponse:
        # a number too large for SQL or a date that slipped past the checks: the client's input, not our fault
        return JSONResponse({"error": {"code": "validation_failed", "message": "validation failed",
                                       "details": {"errors": [{"field": "request",
                                                               "message": "a number is out of range"}]}}},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware sends this answer, then re-raises for the server's log
        request_id = request_id_of(request)
        log.error("unhandled_error", request_id=request_id, path=request.url.path, error=repr(exc)[:500])
        return JSONResponse({"error": {"code": "internal_error", "message": "internal server error",
                                       "details": {"request_id": request_id}}},
                            status_code=500, headers={"X-Request-Id": request_id})

    routers = (management.router, campaigns.router, report_routes.router, tracking.router, api_keys.router,
               ops.router)
    for router in routers:
        app.include_router(router)
    app.state.route_methods = [(route.path_regex, set(route.methods or ())) for router in routers
                               for route in router.routes if isinstance(route, APIRoute) and route.methods]
    app.add_middleware(RequestContext)
    app.add_middleware(ops.RequestMetrics)
    return app


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")


class RequestContext:
    """One id per API call, in the ``X-Request-Id`` answer header, every log line and the metadata of
    every event the call appends (with its actor: the key, or ``system:tracking`` for the token
    endpoints). A caller's own well-formed ``X-Request-Id`` is kept, so ids can span systems."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path = str(scope.get("path", ""))
        actor = "system:tracking" if path.startswith(("/t/", "/u/")) else None

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                # No answer of ours is ever content-sniffed into something else (a JSON error read
                # as HTML, say); the tracking endpoints already set it and keep their one copy.
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            with acting(request_id=request_id, actor=actor), structlog.contextvars.bound_contextvars(
                    request_id=request_id):
                await self.app(scope, receive, send_with_id)
        except Exception:
            # An unhandled error is answered (500 envelope) and logged by the middleware outside this
            # one, then by the server ("Exception in ASGI application"), both after the block above
            # has unbound the id; the server runs each request in its own task, so binding it again
            # for the rest of this task puts the id on those lines too and on no other request's.
            structlog.contextvars.bind_contextvars(request_id=request_id)
            raise
