"""Routes for a campaign's reports: per-step stats, timeline, activity, skips and replies.

Query parameters arrive as strings and are checked by the engine methods, so the Python API and
REST answer the same 422 ``validation_failed`` with the same ``{field, message}`` errors.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from engine.api.support import workspace_of

router = APIRouter(prefix="/v1/campaigns")
Ws = Depends(workspace_of)


def _engine(request: Request) -> Any:
    return request.app.state.engine


@router.get("/{campaign_id}/stats/steps")
async def step_stats(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).campaign_step_stats(ws, campaign_id)


@router.get("/{campaign_id}/stats/links")
async def link_stats(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).campaign_link_stats(ws, campaign_id)


@router.get("/{campaign_id}/stats/timeline")
async def timeline(request: Request, campaign_id: str, from_: str | None = Query(None, alias="from"),
                   to: str | None = None, interval: str = "day", ws: str = Ws) -> Any:
    return await _engine(request).campaign_timeline(ws, campaign_id, from_=from_, to=to, interval=interval)


@router.get("/{campaign_id}/activity")
async def activity(request: Request, campaign_id: str, type: str | None = None, contact_id: str | None = None,
                   from_: str | None = Query(None, alias="from"), to: str | None = None,
                   after: str | None = None, limit: str | None = None, cursor: str | None = None,
                   ws: str = Ws) -> Any:
    return await _engine(request).campaign_activity(ws, campaign_id, type=type, contact_id=contact_id, from_=from_,
                                                    to=to, after=after, limit=limit, cursor=cursor)


@router.get("/{campaign_id}/skips")
async def skips(request: Request, campaign_id: str, kind: str | None = None, limit: str | None = None,
                ws: str = Ws) -> Any:
    return await _engine(request).campaign_skips(ws, campaign_id, kind=kind, limit=limit)


@router.get("/{campaign_id}/replies")
async def replies(request: Request, campaign_id: str, limit: str | None = None, ws: str = Ws) -> Any:
    return await _engine(request).campaign_replies(ws, campaign_id, limit=limit)
