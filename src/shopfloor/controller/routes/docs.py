"""`/docs` and `/openapi.json` behind the same auth as the API.

The app is created with `docs_url=None, redoc_url=None, openapi_url=None` and includes this
router: the schema and the Swagger UI are then served by routes that depend on the token
(the UI page passes `?token=` on to the schema it fetches).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from shopfloor.controller.deps import AUTH

router = APIRouter(dependencies=AUTH, include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request, token: Annotated[str | None, Query()] = None) -> HTMLResponse:
    schema = "/openapi.json" + (f"?token={quote(token)}" if token else "")
    return get_swagger_ui_html(openapi_url=schema, title=f"{request.app.title} - docs")
