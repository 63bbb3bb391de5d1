"""Health and orientation: /healthz for load balancers, / for people."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from shopfloor.controller.deps import SettingsDep
from shopfloor.registry import kinds

router = APIRouter(tags=["meta"])
_HEALTH_RPC = timedelta(seconds=3)


@router.get("/healthz")
async def healthz(request: Request, response: Response, settings: SettingsDep) -> dict[str, Any]:
    """200 when Temporal answers; 503 (never 500) when it does not. Needs no token."""
    try:
        client = await request.app.state.temporal.get()
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=_HEALTH_RPC)
    except Exception as err:  # any failure here means "not healthy", never a 500
        response.status_code = 503
        return {"ok": False, "temporal": settings.target_address, "error": str(err)[:300]}
    return {"ok": True, "temporal": settings.target_address, "namespace": settings.namespace}


@router.get("/", response_model=None)
async def index(request: Request, settings: SettingsDep) -> dict[str, Any] | HTMLResponse:
    """Where to go from here: links for programs (JSON), a small page for people (HTML).
    Needs no token: it shows nothing but links (the jobs list behind them asks for one)."""
    base = settings.public_controller_url
    links = {
        "API docs": f"{base}/docs",
        "jobs": f"{base}/jobs",
        "kinds": f"{base}/kinds",
        "schedules": f"{base}/schedules",
        "kill switch": f"{base}/kill-switch",
        "health": f"{base}/healthz",
    }
    if settings.embedded:
        links["Temporal UI"] = f"http://127.0.0.1:{settings.dev_ui_port}"
    if "text/html" not in request.headers.get("accept", ""):
        return {"service": "shopfloor", "links": links}
    items = "".join(
        f'<li><a href="{html.escape(url)}">{html.escape(name)}</a></li>'
        for name, url in links.items()
    )
    kinds_list = ", ".join(html.escape(k) for k in kinds())
    page = (
        "<!doctype html><meta charset=utf-8><title>shopfloor</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:40rem}</style>"
        "<h1>shopfloor</h1><p>Durable jobs for agent systems, on Temporal.</p>"
        f"<ul>{items}</ul><p>Job kinds: {kinds_list}.</p>"
        "<p>Submit with <code>POST /jobs/&lt;kind&gt;</code> or <code>shopfloor submit</code>; "
        "see the API docs.</p>"
    )
    return HTMLResponse(page)
