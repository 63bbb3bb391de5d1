"""What job kinds this deployment offers, and how each is steered and watched."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shopfloor.controller.deps import AUTH, SettingsDep
from shopfloor.registry import kinds, queue_for

router = APIRouter(tags=["meta"], dependencies=AUTH)


@router.get("/kinds")
async def list_kinds(settings: SettingsDep) -> list[dict[str, Any]]:
    return [
        {
            "name": k.name,
            "aliases": list(k.aliases),
            "summary": k.summary,
            "workflow_type": k.workflow_type,
            "task_queue": queue_for(k, settings),
            "input_schema": k.input_model.model_json_schema(),
            "signals": [s.name for s in k.signals],
            "queries": [q.name for q in k.queries],
            "updates": [u.name for u in k.updates],
        }
        for k in kinds().values()
    ]
