"""HTTP for schedules and the kill switch: the same operations as `shopfloor schedule …`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Response

from shopfloor.controller.deps import AUTH, ClientDep, SettingsDep
from shopfloor.killswitch import KillSwitchState, read_state
from shopfloor.registry import InputRejected
from shopfloor.schedules import service
from shopfloor.schedules.models import (
    Applied,
    BackfillRequest,
    KillSwitchRequest,
    Overlap,
    PauseRequest,
    ScheduleFile,
    ScheduleView,
    Triggered,
)

router = APIRouter(tags=["schedules"], dependencies=AUTH)
T = TypeVar("T")


@router.get("/schedules")
async def list_schedules(client: ClientDep, settings: SettingsDep) -> list[ScheduleView]:
    return await service.list_schedules(client, settings)


@router.put("/schedules")
async def apply_schedules(
    file: ScheduleFile,
    client: ClientDep,
    settings: SettingsDep,
    prune: Annotated[bool, Query(description="delete applied schedules not in this file")] = False,
) -> list[Applied]:
    """Create or update every schedule in the file; applying it twice changes nothing."""
    try:
        return await service.apply(client, settings, file, prune=prune)
    except InputRejected as err:
        raise HTTPException(422, str(err)) from None


# response_model=None: the return annotation is for mypy; FastAPI would take it for a response
# model (checked answers, another OpenAPI document).
@router.get("/schedules/{schedule_id}", response_model=None)
async def describe_schedule(
    schedule_id: str, client: ClientDep, settings: SettingsDep
) -> ScheduleView:
    return await _found(service.describe(client, settings, schedule_id))


@router.post("/schedules/{schedule_id}/pause")
async def pause_schedule(
    schedule_id: str, body: PauseRequest, client: ClientDep, settings: SettingsDep
) -> ScheduleView:
    return await _found(service.pause(client, settings, schedule_id, body.note))


@router.post("/schedules/{schedule_id}/unpause")
async def unpause_schedule(
    schedule_id: str, body: PauseRequest, client: ClientDep, settings: SettingsDep
) -> ScheduleView:
    return await _found(service.unpause(client, settings, schedule_id, body.note))


@router.post("/schedules/{schedule_id}/trigger", status_code=202)
async def trigger_schedule(
    schedule_id: str,
    client: ClientDep,
    settings: SettingsDep,
    overlap: Annotated[
        Overlap | None,
        Query(description="this trigger's overlap policy (default: the schedule's own)"),
    ] = None,
) -> Triggered:
    """Run now — even while paused (agent turns still check the kill switch) — under the
    schedule's overlap policy: with `skip` and a run still going, nothing starts (SKIPPED)."""
    return await _found(service.trigger(client, settings, schedule_id, overlap))


@router.post("/schedules/{schedule_id}/backfill", status_code=202)
async def backfill_schedule(
    schedule_id: str, body: BackfillRequest, client: ClientDep, settings: SettingsDep
) -> dict[str, Any]:
    await _found(service.backfill(client, settings, schedule_id, body.start, body.end))
    return {"schedule": schedule_id, "status": "BACKFILL_REQUESTED"}


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, client: ClientDep, settings: SettingsDep) -> Response:
    await _found(service.delete(client, settings, schedule_id))
    return Response(status_code=204)


@router.get("/kill-switch", tags=["kill switch"])
async def kill_switch_state(client: ClientDep, settings: SettingsDep) -> KillSwitchState:
    return await read_state(client, settings.task_queue_prefix)


@router.post("/kill-switch/on", tags=["kill switch"])
async def kill_switch_on(
    body: KillSwitchRequest, client: ClientDep, settings: SettingsDep
) -> KillSwitchState:
    """Pauses every schedule and makes every agent/gateway turn refuse, on every machine."""
    return await service.kill_switch_on(client, settings, body.reason)


@router.post("/kill-switch/off", tags=["kill switch"])
async def kill_switch_off(
    body: PauseRequest, client: ClientDep, settings: SettingsDep
) -> KillSwitchState:
    """Unpauses the schedules the switch paused; turns start again."""
    return await service.kill_switch_off(client, settings, body.note or "turned off")


async def _found(call: Awaitable[T]) -> T:
    try:
        return await call
    except service.ScheduleNotFound as err:
        raise HTTPException(404, str(err)) from None
