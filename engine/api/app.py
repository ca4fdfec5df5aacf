"""The FastAPI application factory: error mapping, limits and the routers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.api import api_keys, campaigns, management, ops, tracking
from engine.api import reports as report_routes
from engine.api.support import DEFAULT_MAX_BODY, RateLimiter, error_response
from engine.errors import EngineError


def create_app(engine: Any, *, max_body_bytes: int = DEFAULT_MAX_BODY, rate_limit_per_minute: int = 6000) -> FastAPI:
    """Build the ASGI app serving the contract's REST API on top of a running engine."""
    app = FastAPI(title="campaign-engine", version="0.1.0",
                  description="Event-sourced sending engine for multi-step email campaigns.")
    app.state.engine = engine
    app.state.max_body = max_body_bytes
    app.state.limiter = RateLimiter(rate_limit_per_minute)

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
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail), "details": {}}},
                            status_code=exc.status_code)

    app.include_router(management.router)
    app.include_router(campaigns.router)
    app.include_router(report_routes.router)
    app.include_router(tracking.router)
    app.include_router(api_keys.router)
    app.include_router(ops.router)
    app.add_middleware(ops.RequestMetrics)
    return app
