"""Tracking and unsubscribe routes: ``/t/o``, ``/t/c`` and ``/u``, outside ``/v1`` and without an API key.

Recipients' mail clients call these, so the token in the path is the only credential. Every
answer carries ``Referrer-Policy: no-referrer`` so the token never leaks to the site a click leads
to, ``no-store`` caching so a proxy never answers for us, and ``X-Content-Type-Options: nosniff``
so a browser never reads an answer as anything but its declared type. A forged or altered click
token is the JSON ``not_found`` error with those same headers.
"""

from __future__ import annotations

import html
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from engine.api.support import error_response
from engine.errors import NotFound
from engine.service.tracking import UNSUBSCRIBED

router = APIRouter(tags=["tracking"])

# The smallest transparent GIF: 1x1, a two-colour palette, colour 0 transparent (43 bytes).
PIXEL: Final = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
                b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

NO_STORE: Final = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
PAGE_HEADERS: Final = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}}</style></head>
<body><h1>{title}</h1><p>{text}</p>{form}</body></html>
"""


def _engine(request: Request) -> Any:
    return request.app.state.engine


def _page(title: str, text: str, *, form_token: str | None = None, status: int = 200) -> HTMLResponse:
    form = ""
    if form_token is not None:
        # A relative action posts back to /u/{token} even when the public URL has a path prefix.
        form = (f'<form method="post" action="{html.escape(form_token)}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>')
    body = _PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _not_found_page() -> HTMLResponse:
    return _page("Link not valid", "This unsubscribe link is not valid. Reply to the email to be removed.",
                 status=404)


def _done_page() -> HTMLResponse:
    return _page("You are unsubscribed", "You will not receive further emails from this sender.")


@router.get("/t/o/{token}", summary="Open pixel")
async def open_pixel(request: Request, token: str) -> Response:
    """The same 1x1 GIF whatever the token: a forged pixel learns nothing from the answer."""
    await _engine(request).track_open(token, request.headers.get("user-agent"))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


async def _click_answer(request: Request, token: str, *, head: bool) -> Response:
    """302 to the recorded link, or the ``not_found`` envelope; both with the tracking headers."""
    try:
        url = await _engine(request).track_click(token, request.headers.get("user-agent"), head=head)
    except NotFound as exc:
        refused = error_response(exc)
        refused.headers.update(NO_STORE)
        return refused
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/t/c/{token}", summary="Tracked link")
async def click(request: Request, token: str) -> Response:
    """302 to the link that was in the email; 404 (JSON, ``not_found``) for anything else.

    Everyone gets the same redirect: a link scanner's click is told apart only in what is
    recorded (``prefetch``), so a gateway checking the link sees where it really leads.
    """
    return await _click_answer(request, token, head=False)


@router.head("/t/c/{token}", summary="Tracked link, checked without following")
async def click_head(request: Request, token: str) -> Response:
    """The ``GET`` answer (302 to the same link, or 404), for scanners that check links with ``HEAD``.

    Browsers follow a link with ``GET``; a ``HEAD`` is a program checking it, so the click is
    recorded as ``prefetch`` and never counted (a 405 would make some gateways flag the link).
    """
    return await _click_answer(request, token, head=True)


@router.get("/u/{token}", summary="Unsubscribe page", response_class=HTMLResponse)
async def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    """A confirmation page; changes nothing (link scanners follow GET links)."""
    try:
        status = await _engine(request).unsubscribe_status(token)
    except NotFound:
        return _not_found_page()
    if status == UNSUBSCRIBED:
        return _done_page()
    return _page("Unsubscribe", "Stop receiving emails from this sender?", form_token=token)


@router.post("/u/{token}", summary="One-click unsubscribe (RFC 8058)", response_class=HTMLResponse)
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    """RFC 8058: the body is ``List-Unsubscribe=One-Click``, but any body is accepted (and not read)."""
    try:
        await _engine(request).unsubscribe_one_click(token)
    except NotFound:
        return _not_found_page()
    return _done_page()
