"""Operations endpoints (``/healthz``, ``/readyz``, ``/metrics``) and the request-metrics middleware.

None of them needs an API key: probes and Prometheus do not hold one, and they reveal no
workspace's data (counts across the whole database at most).

Readiness. ``/readyz`` answers 200 when the database answers and the runtime loop is on time,
else 503 (with the JSON error envelope beside the three fields, so that every 5xx carries it):

- ``database``: ``"ok"`` or ``"unavailable"`` (``SELECT 1`` within ``ready_database_timeout``,
  2 s by default).
- ``runtime``: ``"ticking"`` (on time), ``"lagging"`` (behind the tick it owes by more than
  ``ready_max_lag_seconds``, 120 s by default), ``"failing"`` (the last tick raised and is being
  retried; still ready while the lag is small, so one database blip does not flap the probe),
  or ``"not_running"`` (no ``engine.run()`` loop in this process).
- ``lag_seconds``: how far the loop is behind the tick it owes (null without a loop).

Without a loop in this process (an application that embeds the engine and serves the API, with
ticks driven by its own code or by ``worker`` processes elsewhere), the API can still serve, so
the answer is 200 with ``runtime: "not_running"``. An engine created with the option
``ready_requires_runtime=True`` (as ``campaign-engine serve`` does) answers 503 instead, so a
server whose loop has not started or has stopped is taken out of rotation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import metrics
from engine.runtime import runtime_of
from events.registry import format_time, parse_time
from projections import tables as t
from projections.sending import emails

log = structlog.get_logger("campaign_engine.api")
router = APIRouter(tags=["operations"])

DEFAULT_MAX_LAG_SECONDS = 120.0
DEFAULT_DATABASE_TIMEOUT = 2.0


def _engine(request: Request) -> Any:
    return request.app.state.engine


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process runs; it touches nothing, so a busy database never fails it."""
    return {"status": "ok"}


async def _database_ok(engine: Any) -> bool:
    timeout = float(engine.options.get("ready_database_timeout", DEFAULT_DATABASE_TIMEOUT))
    try:
        async with asyncio.timeout(timeout):
            async with engine.store.reading() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", never a 500
        log.warning("readyz_database_unavailable", error=str(exc).splitlines()[0][:200] if str(exc) else repr(exc))
        return False
    return True


def runtime_state(engine: Any) -> tuple[str, float | None]:
    """(state, lag in seconds) of this process's runtime loop; see the module docstring."""
    runtime = runtime_of(engine)
    if runtime is None:
        return "not_running", None
    lag = round(runtime.lag_seconds(engine.now()), 3)
    if lag > float(engine.options.get("ready_max_lag_seconds", DEFAULT_MAX_LAG_SECONDS)):
        return "lagging", lag
    return ("failing" if runtime.failing else "ticking"), lag


@router.get("/readyz", responses={503: {"description": "not ready: the database or the runtime loop"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers and the runtime loop is on time."""
    engine = _engine(request)
    database = "ok" if await _database_ok(engine) else "unavailable"
    runtime, lag = runtime_state(engine)
    runtime_ready = runtime in ("ticking", "failing") or (
        runtime == "not_running" and not engine.options.get("ready_requires_runtime", False))
    body: dict[str, Any] = {"database": database, "runtime": runtime, "lag_seconds": lag}
    if database == "ok" and runtime_ready:
        return JSONResponse(body)
    problems = [] if database == "ok" else ["database unavailable"]
    if not runtime_ready:
        problems.append(f"runtime {runtime}")
    body["error"] = {"code": "not_ready", "message": "not ready: " + ", ".join(problems), "details": dict(body)}
    return JSONResponse(body, status_code=503)


async def queue_state(engine: Any) -> metrics.QueueState:
    """Due emails of active campaigns and the oldest one's wait: two queries on the (status, due_at) index."""
    now = engine.now()
    now_s = format_time(now)
    e, c = emails.c, t.campaigns.c
    due = (e.status == "scheduled") & (e.due_at <= now_s) & (c.status == "active")
    async with engine.store.reading() as conn:
        depth = (await conn.execute(select(func.count()).select_from(emails.join(t.campaigns, c.id == e.campaign_id))
                                    .where(due))).scalar()
        oldest = (await conn.execute(select(func.min(e.due_at)).select_from(
            emails.join(t.campaigns, c.id == e.campaign_id)).where(due))).scalar()
    lag = max(0.0, (now - parse_time(oldest)).total_seconds()) if oldest else 0.0
    runtime = runtime_of(engine)
    return metrics.QueueState(due_emails=int(depth or 0), oldest_due_lag_seconds=lag,
                              runtime_lag_seconds=runtime.lag_seconds(now) if runtime is not None else None)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format: the process's counters and this scrape's queue gauges."""
    try:
        state: metrics.QueueState | None = await queue_state(_engine(request))
    except Exception as exc:  # noqa: BLE001 - the counters are still worth scraping without the database
        log.warning("metrics_queue_unavailable", error=str(exc).splitlines()[0][:200] if str(exc) else repr(exc))
        state = None
    return Response(metrics.render(state), media_type=metrics.CONTENT_TYPE)


class RequestMetrics:
    """ASGI middleware counting every HTTP request by method, route template and status.

    The route *template* (``/v1/campaigns/{campaign_id}``), never the raw path, keeps the label
    set bounded; a path no route matched is counted as ``unmatched``. A plain ASGI wrapper rather
    than ``BaseHTTPMiddleware``, which would buffer streamed bodies and run the app in another task.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.record_api_request(scope.get("method", "GET"), route, status, time.perf_counter() - started)
