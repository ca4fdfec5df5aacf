"""Routes for the account, senders, contacts, lists, suppressions, webhooks and the raw log."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from engine.api.support import idempotent, json_body, post_json, read_body, workspace_of
from engine.errors import BadRequest, ValidationFailed
from engine.service import contact_csv

router = APIRouter(prefix="/v1")
Ws = Depends(workspace_of)


def _engine(request: Request) -> Any:
    return request.app.state.engine


@router.get("/account")
async def account(request: Request, ws: str = Ws) -> Any:
    return await _engine(request).get_account(ws)


@router.get("/forecast")
async def workspace_forecast(request: Request, days: int = 7, ws: str = Ws) -> Any:
    return await _engine(request).workspace_forecast(ws, days)


# -- senders ----------------------------------------------------------------------------------
@router.post("/senders", status_code=201)
async def create_sender(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).create_sender(ws, body))


@router.get("/senders")
async def list_senders(request: Request, page: int = 1, per_page: int = 50, cursor: str | None = None,
                       ws: str = Ws) -> Any:
    return await _engine(request).list_senders(ws, page, per_page, cursor=cursor)


@router.get("/senders/{sender_id}")
async def get_sender(request: Request, sender_id: str, ws: str = Ws) -> Any:
    return await _engine(request).get_sender(ws, sender_id)


@router.patch("/senders/{sender_id}")
async def update_sender(request: Request, sender_id: str, ws: str = Ws) -> Any:
    return await _engine(request).update_sender(ws, sender_id, await json_body(request))


@router.delete("/senders/{sender_id}")
async def delete_sender(request: Request, sender_id: str, ws: str = Ws) -> Any:
    return await _engine(request).delete_sender(ws, sender_id)


@router.post("/senders/{sender_id}/reenable")
async def reenable_sender(request: Request, sender_id: str, ws: str = Ws) -> JSONResponse:
    async def run() -> tuple[int, Any]:
        return 200, await _engine(request).reenable_sender(ws, sender_id)

    return await idempotent(request, ws, {}, run)


@router.post("/senders/{sender_id}/check")
async def check_sender(request: Request, sender_id: str, ws: str = Ws) -> Any:
    return await _engine(request).check_sender(ws, sender_id)


@router.post("/senders/{sender_id}/dkim")
async def set_sender_dkim(request: Request, sender_id: str, ws: str = Ws) -> JSONResponse:
    """Generate or import the sender's DKIM key; an empty body generates RSA 2048 with a dated selector."""
    return await post_json(request, ws, 200, lambda body: _engine(request).set_sender_dkim(ws, sender_id, body),
                           allow_empty=True)


@router.get("/senders/{sender_id}/dns")
async def sender_dns(request: Request, sender_id: str, ws: str = Ws) -> Any:
    return await _engine(request).sender_dns(ws, sender_id)


# -- contacts ---------------------------------------------------------------------------------
@router.post("/contacts", status_code=201)
async def create_contact(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).create_contact(ws, body))


CSV_TYPES = ("text/csv", "application/csv", "text/tab-separated-values")


def _decode_csv(raw: bytes) -> str:
    """CSV as UTF-8, a BOM (Excel's "CSV UTF-8") ignored."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("CSV must be UTF-8") from None


def _mapping_of(text: str | None) -> dict[str, str | None]:
    """The ``mapping`` query parameter or form field: a JSON object ``{header: field}``."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # thousands of nested brackets are no mapping either
        raise ValidationFailed([{"field": "mapping", "message": "mapping must be JSON: {\"header\": \"field\"}"}]
                               ) from None
    return contact_csv.parse_mapping(value)


async def _multipart_csv(request: Request) -> tuple[str, str | None]:
    """The ``file`` part of a form upload (``curl -F file=@contacts.csv``) and its ``mapping`` field.

    The body is read through :func:`read_body` first so the upload obeys the same size limit
    as any other body; starlette's parser then reads it from memory.
    """
    raw = await read_body(request)

    async def whole_body() -> AsyncGenerator[bytes, None]:
        yield raw

    try:
        form = await MultiPartParser(request.headers, whole_body()).parse()
    except MultiPartException as exc:
        raise BadRequest(f"multipart body: {exc.message}") from None
    upload = form.get("file")
    if upload is None:
        raise BadRequest("a multipart upload needs the CSV in a field named file")
    content = await upload.read() if isinstance(upload, UploadFile) else upload.encode()
    mapping = form.get("mapping")
    return _decode_csv(content), mapping if isinstance(mapping, str) else None


@router.post("/contacts/import")
async def import_contacts(request: Request, list_id: str | None = None, mapping: str | None = None,
                          ws: str = Ws) -> JSONResponse:
    """Import contacts from a JSON array, a CSV body or a multipart upload (field ``file``).

    ``list_id`` adds the imported contacts to that list; ``mapping`` (a JSON object
    ``{header: field}``, as a query parameter or a form field) overrides how CSV headers are read.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    engine = _engine(request)
    if ctype in CSV_TYPES or ctype == "multipart/form-data":
        if ctype == "multipart/form-data":
            text, form_mapping = await _multipart_csv(request)
            mapping = form_mapping if form_mapping is not None else mapping
        else:
            text = _decode_csv(await read_body(request))
        columns = _mapping_of(mapping)

        async def run_csv() -> tuple[int, Any]:
            return 200, await engine.import_contacts_csv(ws, text, mapping=columns, list_id=list_id)

        return await idempotent(request, ws, [text, columns, list_id], run_csv)
    body = await json_body(request)
    if not isinstance(body, list):
        raise BadRequest("send a JSON array of contacts, text/csv, or a multipart upload with a file field")

    async def run_json() -> tuple[int, Any]:
        return 200, await engine.import_contacts(ws, body, list_id=list_id)

    return await idempotent(request, ws, body if list_id is None else [body, list_id], run_json)


@router.get("/contacts")
async def list_contacts(request: Request, q: str | None = None, status: str | None = None,
                        list_id: str | None = None, page: int = 1, per_page: int = 50, cursor: str | None = None,
                        ws: str = Ws) -> Any:
    return await _engine(request).list_contacts(ws, q=q, status=status, list_id=list_id, page=page,
                                                per_page=per_page, cursor=cursor)


@router.get("/contacts/{contact_id}")
async def get_contact(request: Request, contact_id: str, ws: str = Ws) -> Any:
    return await _engine(request).get_contact(ws, contact_id)


@router.patch("/contacts/{contact_id}")
async def update_contact(request: Request, contact_id: str, ws: str = Ws) -> Any:
    return await _engine(request).update_contact(ws, contact_id, await json_body(request))


@router.delete("/contacts/{contact_id}")
async def erase_contact(request: Request, contact_id: str, ws: str = Ws) -> Any:
    return await _engine(request).erase_contact(ws, contact_id)


# -- lists ------------------------------------------------------------------------------------
@router.post("/lists", status_code=201)
async def create_list(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).create_list(ws, body))


@router.get("/lists")
async def list_lists(request: Request, page: int = 1, per_page: int = 50, cursor: str | None = None,
                     ws: str = Ws) -> Any:
    return await _engine(request).list_lists(ws, page, per_page, cursor=cursor)


@router.post("/lists/{list_id}/contacts")
async def add_list_contacts(request: Request, list_id: str, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 200, lambda body: _engine(request).add_list_contacts(ws, list_id, body))


@router.delete("/lists/{list_id}/contacts")
async def remove_list_contacts(request: Request, list_id: str, ws: str = Ws) -> Any:
    return await _engine(request).remove_list_contacts(ws, list_id, await json_body(request))


# -- suppressions -----------------------------------------------------------------------------
@router.get("/suppressions")
async def list_suppressions(request: Request, page: int = 1, per_page: int = 50, cursor: str | None = None,
                            ws: str = Ws) -> Any:
    return await _engine(request).list_suppressions(ws, page, per_page, cursor=cursor)


@router.post("/suppressions", status_code=201)
async def add_suppression(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).add_suppression(ws, body))


@router.delete("/suppressions/{value}")
async def delete_suppression(request: Request, value: str, ws: str = Ws) -> Any:
    return await _engine(request).delete_suppression(ws, value)


# -- webhooks ---------------------------------------------------------------------------------
@router.post("/webhooks", status_code=201)
async def create_webhook(request: Request, ws: str = Ws) -> JSONResponse:
    return await post_json(request, ws, 201, lambda body: _engine(request).create_webhook(ws, body))


@router.get("/webhooks")
async def list_webhooks(request: Request, page: int = 1, per_page: int = 50, cursor: str | None = None,
                        ws: str = Ws) -> Any:
    return await _engine(request).list_webhooks(ws, page, per_page, cursor=cursor)


@router.delete("/webhooks/{webhook_id}")
async def delete_webhook(request: Request, webhook_id: str, ws: str = Ws) -> Any:
    return await _engine(request).delete_webhook(ws, webhook_id)


# -- the raw log ------------------------------------------------------------------------------
@router.get("/events")
async def list_events(request: Request, after: int = 0, limit: int = 100, type: str | None = None,
                      stream: str | None = None, cursor: str | None = None, ws: str = Ws) -> Any:
    return await _engine(request).list_events(ws, after=after, limit=limit, type=type, stream=stream,
                                              cursor=cursor)
