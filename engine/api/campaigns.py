"""Routes for campaigns, their lifecycle and enrollments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from engine.api.support import idempotent, json_body, post_json, workspace_of
from engine.errors import ValidationFailed

router = APIRouter(prefix="/v1/campaigns")
Ws = Depends(workspace_of)


def _engine(request: Request) -> Any:
    return request.app.state.engine


@router.post("", status_code=201)
async def create_campaign(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).create_campaign(ws, body))


@router.get("")
async def list_campaigns(request: Request, page: int = 1, per_page: int = 50, status: str | None = None,
                         folder: str | None = None, tag: str | None = None, q: str | None = None,
                         sort: str = "created_at", order: str = "desc", cursor: str | None = None,
                         ws: str = Ws) -> Any:
    return await _engine(request).list_campaigns(ws, page=page, per_page=per_page, status=status, folder=folder,
                                                 tag=tag, q=q, sort=sort, order=order, cursor=cursor)


@router.post("/bulk_delete")
async def bulk_delete(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 200, lambda body: _engine(request).bulk_delete_campaigns(ws, body))


@router.get("/{campaign_id}")
async def get_campaign(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).get_campaign(ws, campaign_id)


@router.patch("/{campaign_id}")
async def update_campaign(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).update_campaign(ws, campaign_id, await json_body(request))


@router.put("/{campaign_id}/schedule")
async def set_schedule(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).set_schedule(ws, campaign_id, await json_body(request))


@router.delete("/{campaign_id}")
async def delete_campaign(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).delete_campaign(ws, campaign_id)


@router.post("/{campaign_id}/copy", status_code=201)
async def copy_campaign(request: Request, campaign_id: str, ws: str = Ws) -> JSONResponse:
    async def run() -> tuple[int, Any]:
        return 201, await _engine(request).copy_campaign(ws, campaign_id)

    return await idempotent(request, ws, {}, run)


def _lifecycle(action: str) -> Any:
    async def handler(request: Request, campaign_id: str, ws: str = Ws) -> JSONResponse:
        async def run() -> tuple[int, Any]:
            return 200, await getattr(_engine(request), f"{action}_campaign")(ws, campaign_id)

        return await idempotent(request, ws, {}, run)

    handler.__name__ = f"{action}_campaign"
    return handler


for _action in ("approve", "launch", "pause", "resume", "cancel", "archive", "complete"):
    router.add_api_route(f"/{{campaign_id}}/{_action}", _lifecycle(_action), methods=["POST"],
                         name=f"{_action}_campaign")


@router.get("/{campaign_id}/stats")
async def stats(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).campaign_stats(ws, campaign_id)  # 404 for another workspace's campaign


# -- enrollments ------------------------------------------------------------------------------
@router.post("/{campaign_id}/enrollments")
async def enroll(request: Request, campaign_id: str, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 200, lambda body: _engine(request).enroll(ws, campaign_id, body))


@router.get("/{campaign_id}/enrollments")
async def list_enrollments(request: Request, campaign_id: str, status: str | None = None,
                           batch_number: int | None = None, page: int = 1, per_page: int = 50,
                           cursor: str | None = None, ws: str = Ws) -> Any:
    if batch_number is not None and batch_number < 1:  # batches are numbered from 1, as the schema says
        raise ValidationFailed([{"field": "batch_number", "message": "batch_number must be at least 1"}])
    return await _engine(request).list_enrollments(ws, campaign_id, status=status, batch_number=batch_number,
                                                   page=page, per_page=per_page, cursor=cursor)


@router.delete("/{campaign_id}/enrollments")
async def remove_enrollments(request: Request, campaign_id: str, ws: str = Ws) -> Any:
    return await _engine(request).remove_enrollments(ws, campaign_id, await json_body(request))


@router.post("/{campaign_id}/dispatch")
async def dispatch(request: Request, campaign_id: str, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 200, lambda body: _engine(request).dispatch(ws, campaign_id, body),
                           allow_empty=True)


# -- sending helpers and forecast ---------------------------------------------------------------
@router.post("/{campaign_id}/test_send")
async def test_send(request: Request, campaign_id: str, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 200, lambda body: _engine(request).test_send(ws, campaign_id, body))


@router.get("/{campaign_id}/preview")
async def preview(request: Request, campaign_id: str, contact_id: str | None = None, step: int | None = None,
                  ws: str = Ws) -> Any:
    return await _engine(request).preview(ws, campaign_id, contact_id, step)


@router.get("/{campaign_id}/forecast")
async def forecast(request: Request, campaign_id: str, days: int = 7, daily_limit: int | None = None,
                   max_per_hour: int | None = None, every_minutes: int | None = None, senders_add: int | None = None,
                   as_if: str | None = None, ws: str = Ws) -> Any:
    """The forecast; what-if parameters change nothing stored (see the engine's ``forecast``)."""
    return await _engine(request).forecast(ws, campaign_id, days, daily_limit=daily_limit, max_per_hour=max_per_hour,
                                           every_minutes=every_minutes, senders_add=senders_add, as_if=as_if)
