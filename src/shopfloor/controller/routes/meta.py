"""Health and orientation: /healthz for load balancers, / for people."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from shopfloor.controller.deps import AUTH, SettingsDep
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
async def index(request: Request, settings: SettingsDep) -> dict[str, Any] | Response:
    """People (Accept: text/html) get the dashboard's jobs list; programs get JSON links.
    The JSON needs no token: it shows nothing but links (the routes behind them ask for one)."""
    if "text/html" in request.headers.get("accept", ""):
        from shopfloor.controller.dashboard import jobs_list

        return await jobs_list(request)
    base = settings.public_controller_url
    links = {
        "dashboard": f"{base}/",
        "API docs": f"{base}/docs",
        "jobs": f"{base}/jobs",
        "kinds": f"{base}/kinds",
        "schedules": f"{base}/schedules",
        "kill switch": f"{base}/kill-switch",
        "health": f"{base}/healthz",
        "metrics": f"{base}/metrics",
    }
    if settings.temporal_ui:
        links["Temporal UI"] = settings.temporal_ui
    return {"service": "shopfloor", "links": links, "kinds": sorted(kinds())}


@router.get("/metrics", dependencies=AUTH, response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this controller process (requests, latencies, errors)."""
    registry = request.app.state.http_metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
