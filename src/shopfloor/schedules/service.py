"""Schedules in Temporal, made from definitions: apply (idempotent), list, describe, pause,
unpause, trigger, backfill, delete — and the kill switch over all of them.

Temporal's `describe` returns calendar specs, not the cron text a user gave, so `apply` keeps
a digest of the applied definition (and the definition itself) in the action's memo, and
compares digests rather than specs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from shopfloor import killswitch
from shopfloor.jobstate import status_name
from shopfloor.registry import InputRejected, kind_named, kinds
from shopfloor.schedules.models import (
    Applied,
    Overlap,
    RecentRun,
    ScheduleDefinition,
    ScheduleFile,
    ScheduleView,
    Triggered,
)
from shopfloor.settings import Settings

RPC = timedelta(seconds=10)
MANAGED = "shopfloor"  # schedule memo `managed_by`: what `apply --prune` may delete
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


class ScheduleNotFound(LookupError):
    pass


def digest(definition: ScheduleDefinition, queue_prefix: str) -> str:
    # `paused` only counts at creation; afterwards pause/unpause own the state.
    canonical = definition.model_dump(mode="json", exclude={"paused"})
    text = json.dumps({"definition": canonical, "prefix": queue_prefix}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_schedule(definition: ScheduleDefinition, settings: Settings) -> Schedule:
    """The Temporal schedule for a definition. Raises InputRejected for a kind or input this
    deployment does not accept, naming the schedule and the field."""
    kind = kind_named(definition.job.kind)
    if kind is None:
        raise InputRejected(
            f"schedule {definition.id!r}: unknown job kind {definition.job.kind!r} "
            f"(one of: {sorted(kinds())})"
        )
    try:
        job = kind.input_model.model_validate(definition.job.input)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise InputRejected(
            f"schedule {definition.id!r}: invalid {kind.name} input at job.input.{where}: "
            f"{first['msg']}"
        ) from None
    if kind.check_input is not None:
        kind.check_input(job, settings)
    schedule_id = settings.task_queue_prefix + definition.id
    return Schedule(
        action=ScheduleActionStartWorkflow(
            kind.workflow_type,
            job,
            # Temporal appends the scheduled time: each run is its own job id.
            id=schedule_id,
            task_queue=settings.task_queue_prefix + kind.task_queue,
            memo={
                "kind": kind.name,
                "schedule": schedule_id,
                "definition_sha256": digest(definition, settings.task_queue_prefix),
                "definition": definition.model_dump_json(),
            },
        ),
        spec=ScheduleSpec(
            cron_expressions=definition.cron,
            time_zone_name=definition.timezone,
            jitter=definition.jitter,
        ),
        policy=SchedulePolicy(
            overlap=OVERLAP[definition.overlap], catchup_window=definition.catchup_window
        ),
        state=ScheduleState(paused=definition.paused, note="paused by its definition")
        if definition.paused
        else ScheduleState(),
    )


async def apply(
    client: Client, settings: Settings, file: ScheduleFile, *, prune: bool = False
) -> list[Applied]:
    """Creates or updates every schedule in `file`; applying it twice changes nothing. A
    schedule made by `apply` that is no longer in the file is left alone unless `prune`."""
    built = {d.id: (d, build_schedule(d, settings)) for d in file.schedules}  # all checked first
    outcomes: list[Applied] = []
    for sid, (definition, schedule) in built.items():
        handle = client.get_schedule_handle(settings.task_queue_prefix + sid)
        try:
            desc = await handle.describe(rpc_timeout=RPC)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await client.create_schedule(
                handle.id, schedule, memo={"managed_by": MANAGED}, rpc_timeout=RPC
            )
            outcomes.append(Applied(id=sid, action="created"))
            continue
        applied = _action_memo(client, desc.schedule.action).get("definition_sha256")
        if applied == digest(definition, settings.task_queue_prefix):
            outcomes.append(Applied(id=sid, action="unchanged"))
            continue

        def keep_state(current: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
            # Paused by someone (or the kill switch) stays paused, with their note.
            new.state = current.description.schedule.state
            return ScheduleUpdate(schedule=new)

        await handle.update(keep_state, rpc_timeout=RPC)
        outcomes.append(Applied(id=sid, action="updated"))
    for entry in await _entries(client, settings):
        if entry.id in built or not entry.managed:
            continue
        if prune:
            await _handle(client, settings, entry.id).delete(rpc_timeout=RPC)
            outcomes.append(Applied(id=entry.id, action="deleted"))
        else:
            outcomes.append(Applied(id=entry.id, action="left alone"))
    return outcomes


@dataclass(frozen=True)
class _Entry:
    """What the list call itself says of a schedule: enough for prune and the kill switch,
    without describing each one (and asking for its recent runs' status)."""

    id: str
    paused: bool
    note: str
    managed: bool


async def _entries(client: Client, settings: Settings) -> list[_Entry]:
    prefix = settings.task_queue_prefix
    entries = []
    async for entry in await client.list_schedules(rpc_timeout=RPC):
        if not entry.id.startswith(prefix):
            continue
        state = entry.schedule.state if entry.schedule else None
        entries.append(
            _Entry(
                id=entry.id.removeprefix(prefix),
                paused=bool(state and state.paused),
                note=(state.note if state else None) or "",
                managed=(await entry.memo()).get("managed_by") == MANAGED,
            )
        )
    return sorted(entries, key=lambda e: e.id)


async def list_schedules(client: Client, settings: Settings) -> list[ScheduleView]:
    return [await describe(client, settings, e.id) for e in await _entries(client, settings)]


async def describe(client: Client, settings: Settings, schedule_id: str) -> ScheduleView:
    with _found(schedule_id):
        desc = await _handle(client, settings, schedule_id).describe(rpc_timeout=RPC)
    memo = _action_memo(client, desc.schedule.action)
    definition = json.loads(memo["definition"]) if "definition" in memo else {}
    recent = []
    for result in desc.info.recent_actions[-5:]:
        job_id = getattr(result.action, "workflow_id", "")
        recent.append(
            RecentRun(
                job_id=job_id,
                scheduled_at=result.scheduled_at,
                started_at=result.started_at,
                status=await _job_status(client, job_id),
            )
        )
    state = desc.schedule.state
    return ScheduleView(
        id=schedule_id,
        kind=memo.get("kind"),
        cron=definition.get("cron") or [],
        timezone=desc.schedule.spec.time_zone_name,
        overlap=desc.schedule.policy.overlap.name.lower(),
        paused=state.paused,
        note=state.note or None,
        next_runs=list(desc.info.next_action_times[:5]),
        recent_runs=recent,
        runs_total=desc.info.num_actions,
        managed=(await desc.memo()).get("managed_by") == MANAGED,
    )


async def pause(client: Client, settings: Settings, schedule_id: str, note: str) -> ScheduleView:
    with _found(schedule_id):
        await _handle(client, settings, schedule_id).pause(note=note or "paused", rpc_timeout=RPC)
    return await describe(client, settings, schedule_id)


async def unpause(client: Client, settings: Settings, schedule_id: str, note: str) -> ScheduleView:
    with _found(schedule_id):
        await _handle(client, settings, schedule_id).unpause(
            note=note or "unpaused", rpc_timeout=RPC
        )
    return await describe(client, settings, schedule_id)


async def trigger(
    client: Client, settings: Settings, schedule_id: str, overlap: Overlap | None = None
) -> Triggered:
    """Runs the action now, even while paused (Temporal's rule) — which is why agent turns
    check the kill switch themselves — under the schedule's own overlap policy unless `overlap`
    overrides it for this trigger: with `skip` and a run still going, nothing starts."""
    handle = _handle(client, settings, schedule_id)
    with _found(schedule_id):
        desc = await handle.describe(rpc_timeout=RPC)
        own = desc.schedule.policy.overlap
        policy = OVERLAP[overlap] if overlap is not None else own
        running = [
            a.workflow_id
            for a in desc.info.running_actions
            if isinstance(a, ScheduleActionExecutionStartWorkflow)
        ]
        await handle.trigger(overlap=policy, rpc_timeout=RPC)
    name = policy.name.lower()
    status: Literal["TRIGGERED", "SKIPPED", "BUFFERED"] = "TRIGGERED"
    whose = "this trigger's" if overlap is not None else "the schedule's"
    if not running:
        message = f"triggered {schedule_id}: a run starts now"
    elif policy == ScheduleOverlapPolicy.SKIP:
        status = "SKIPPED"
        message = (
            f"{schedule_id}: {', '.join(running)} still running and {whose} overlap policy is "
            "skip: no run started (`--overlap allow_all` starts one anyway)"
        )
    elif policy in (ScheduleOverlapPolicy.BUFFER_ONE, ScheduleOverlapPolicy.BUFFER_ALL):
        status = "BUFFERED"
        message = f"{schedule_id}: the run starts once {', '.join(running)} ends ({name})"
    elif policy in (ScheduleOverlapPolicy.CANCEL_OTHER, ScheduleOverlapPolicy.TERMINATE_OTHER):
        verb = "cancels" if policy == ScheduleOverlapPolicy.CANCEL_OTHER else "terminates"
        message = f"triggered {schedule_id}: {verb} {', '.join(running)} first ({name})"
    else:
        message = f"triggered {schedule_id}: a run starts beside {', '.join(running)} ({name})"
    return Triggered(
        schedule=schedule_id,
        status=status,
        overlap=name,
        overridden=overlap is not None,
        running=running,
        message=message,
    )


async def backfill(
    client: Client, settings: Settings, schedule_id: str, start: Any, end: Any
) -> None:
    """Runs every slot the spec had between start and end, as if the schedule had fired."""
    with _found(schedule_id):
        await _handle(client, settings, schedule_id).backfill(
            ScheduleBackfill(start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL),
            rpc_timeout=RPC,
        )


async def delete(client: Client, settings: Settings, schedule_id: str) -> None:
    with _found(schedule_id):
        await _handle(client, settings, schedule_id).delete(rpc_timeout=RPC)


# -- the kill switch across schedules --------------------------------------------------------


async def kill_switch_on(
    client: Client, settings: Settings, reason: str
) -> killswitch.KillSwitchState:
    """Switch first (turns refuse from now on), then pause every running schedule."""
    state = await killswitch.switch_on(client, reason, settings.task_queue_prefix)
    for entry in await _entries(client, settings):
        if not entry.paused:
            await _handle(client, settings, entry.id).pause(
                note=killswitch.NOTE_PREFIX + (state.reason or reason), rpc_timeout=RPC
            )
    return state


async def kill_switch_off(
    client: Client, settings: Settings, note: str
) -> killswitch.KillSwitchState:
    """Unpauses only what the switch paused: a schedule paused by hand stays paused."""
    for entry in await _entries(client, settings):
        if entry.paused and entry.note.startswith(killswitch.NOTE_PREFIX):
            await _handle(client, settings, entry.id).unpause(
                note=f"kill switch off: {note}", rpc_timeout=RPC
            )
    return await killswitch.switch_off(client, note, settings.task_queue_prefix)


# -- helpers ------------------------------------------------------------------------------------


def _handle(client: Client, settings: Settings, schedule_id: str) -> ScheduleHandle:
    return client.get_schedule_handle(settings.task_queue_prefix + schedule_id)


@contextmanager
def _found(schedule_id: str) -> Iterator[None]:
    """A schedule Temporal does not know is a ScheduleNotFound (→ 404), not an RPC error."""
    try:
        yield
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}") from None
        raise


def _action_memo(client: Client, action: Any) -> dict[str, Any]:
    """Describe returns the action's memo as raw payloads."""
    raw = getattr(action, "memo", None) or {}
    converter = client.data_converter.payload_converter
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = converter.from_payload(value) if hasattr(value, "data") else value
        except Exception:  # noqa: BLE001 - a memo someone else wrote; skip what we cannot read
            continue
    return decoded


async def _job_status(client: Client, job_id: str) -> str | None:
    if not job_id:
        return None
    try:
        desc = await client.get_workflow_handle(job_id).describe(rpc_timeout=RPC)
    except RPCError:
        return None
    return status_name(desc.status)
