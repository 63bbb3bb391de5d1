"""Health and orientation: /healthz for load balancers, / for people."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from shopfloor.controller.deps import SettingsDep

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


@router.get("/")
async def index(settings: SettingsDep) -> dict[str, Any]:
    """Where to go from here (no token needed: it shows nothing but links)."""
    base = settings.public_controller_url
    return {
        "service": "shopfloor",
        "api_docs": f"{base}/docs",
        "jobs": f"{base}/jobs",
        "kinds": f"{base}/kinds",
        "health": f"{base}/healthz",
    }
