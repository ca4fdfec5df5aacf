"""Routes for the workspace's API keys: list, create (the key shown once), revoke."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from engine.api.support import idempotent, json_body, workspace_of

router = APIRouter(prefix="/v1", tags=["api keys"])
Ws = Depends(workspace_of)


def _actor(request: Request) -> str:
    """``api_key:<id>`` of the key that made the call (set by :func:`workspace_of`)."""
    return f"api_key:{request.state.api_key_id}"


@router.get("/api_keys")
async def list_api_keys(request: Request, ws: str = Ws) -> Any:
    """The workspace's live keys: ``[{id, name, prefix, created_at, last_used_at}]``; never a key itself."""
    return await request.app.state.engine.list_api_keys(ws)


@router.post("/api_keys", status_code=201)
async def create_api_key(request: Request, ws: str = Ws) -> JSONResponse:
    """A new key ``{id, name, key, prefix, created_at}``: ``key`` is shown in this answer only.

    With an ``Idempotency-Key``, a repeated request appends nothing and answers the first
    response with ``key: null``: the idempotency store keeps responses in plain JSON, and a key
    is stored only as its hash, so it cannot be shown twice (revoke it and create another).
    """
    engine = request.app.state.engine
    body = await json_body(request)
    shown: dict[str, str] = {}

    async def run() -> tuple[int, Any]:
        created = await engine.create_api_key(ws, body, actor=_actor(request))
        shown["key"] = created["key"]
        return 201, {**created, "key": None}  # what the idempotency store may keep

    response = await idempotent(request, ws, body, run)
    if "key" not in shown:  # a replay, or a refusal
        return response
    payload = json.loads(bytes(response.body))
    payload["key"] = shown["key"]
    return JSONResponse(payload, status_code=response.status_code)


@router.delete("/api_keys/{key_id}")
async def revoke_api_key(request: Request, key_id: str, ws: str = Ws) -> Any:
    """Revoke a key: it answers 401 from now on. The workspace's last key cannot be revoked (409 last_api_key)."""
    return await request.app.state.engine.revoke_api_key(ws, key_id, actor=_actor(request))
