"""`/docs`, `/redoc` and `/openapi.json` behind the same auth as the API, working offline.

The app is created with `docs_url=None, redoc_url=None, openapi_url=None` and includes this
router. Swagger UI and ReDoc load their JavaScript from `/docs/assets` (the files the
`fastapi-offline` package ships), never from a CDN: the page works with no network, and no
third-party code runs in a page of this controller. The doc pages take no `?token=`: a token
in the URL of a page that runs code would sit in its history and any Referer; browsers sign in
at /ui/login (the session cookie), API clients send the header.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from shopfloor.controller.deps import AUTH, signed_in

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
router = APIRouter(include_in_schema=False)
assets = StaticFiles(directory=ASSETS)


@router.get("/openapi.json", dependencies=AUTH)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def _signed_in(request: Request) -> None:
    if not signed_in(request):
        raise HTTPException(
            401,
            f"sign in at /ui/login?next={request.url.path} first (this page takes no token "
            "in its URL), or send Authorization: Bearer <token>",
            {"WWW-Authenticate": "Bearer"},
        )


# Nothing but this controller: ReDoc's sidebar would fetch its logo from redoc.ly otherwise.
# (The pages' own bootstrap scripts are inline: FastAPI writes them so.)
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = _CSP
    html.headers["Referrer-Policy"] = "no-referrer"
    html.headers["Cache-Control"] = "no-store"
    return html


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    _signed_in(request)
    return _page(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{request.app.title} - docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    _signed_in(request)
    return _page(
        get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
    )
