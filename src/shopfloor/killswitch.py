"""The kill switch: one move that stops agents across every machine.

Its state lives in Temporal, like all other state: the switch is ON while a workflow execution
with a fixed id runs, with the reason and who/when in its memo, and OFF once that execution
is terminated (the reason for turning it off is recorded too). Nothing polls its task queue,
so reading and flipping it needs no worker; `describe` reads it from any machine.

Turning it on pauses every schedule (with a note saying why) — and because a paused schedule
can still be triggered, every agent/gateway turn checks the switch where it starts
(`refuse_if_on`), and refuses with the reason, non-retryable. Durable waits keep waiting.
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

KILL_SWITCH_WORKFLOW = "ShopfloorKillSwitch"
KILL_SWITCH_REFUSED = "KillSwitchOn"
# The note that marks a schedule as paused by the switch (so `off` unpauses only those).
NOTE_PREFIX = "kill switch: "
_RPC = timedelta(seconds=10)


class KillSwitchState(BaseModel):
    on: bool
    reason: str | None = None
    since: datetime | None = None
    by: str | None = None


def kill_switch_id(prefix: str = "") -> str:
    """One switch per namespace and task-queue prefix (tenants and test runs stay apart)."""
    return f"{prefix}shopfloor-kill-switch"


async def read_state(client: Client, prefix: str = "") -> KillSwitchState:
    handle = client.get_workflow_handle(kill_switch_id(prefix))
    try:
        desc = await handle.describe(rpc_timeout=_RPC)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return KillSwitchState(on=False)
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return KillSwitchState(on=False)
    memo = await desc.memo()
    return KillSwitchState(
        on=True, reason=memo.get("reason"), since=desc.start_time, by=memo.get("by")
    )


async def switch_on(client: Client, reason: str, prefix: str = "") -> KillSwitchState:
    """Idempotent: turning on a switch that is on keeps the first reason."""
    await client.start_workflow(
        KILL_SWITCH_WORKFLOW,
        id=kill_switch_id(prefix),
        # Nothing polls this queue: the running execution itself is the state.
        task_queue=f"{prefix}shopfloor-kill-switch",
        memo={"reason": reason, "by": _who(), "at": datetime.now(UTC).isoformat()},
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        rpc_timeout=_RPC,
    )
    return await read_state(client, prefix)


async def switch_off(client: Client, note: str, prefix: str = "") -> KillSwitchState:
    handle = client.get_workflow_handle(kill_switch_id(prefix))
    try:
        await handle.terminate(f"kill switch off ({_who()}): {note}", rpc_timeout=_RPC)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    return KillSwitchState(on=False)


def refuse_if_on(state: KillSwitchState) -> None:
    """Where agent turns start: a turn never starts while the switch is on."""
    if state.on:
        raise ApplicationError(
            f"kill switch is on since {state.since:%Y-%m-%d %H:%M:%S} UTC "
            f"({state.reason}): agent turns are refused until it is turned off",
            type=KILL_SWITCH_REFUSED,
            non_retryable=True,
        )


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - a name for the record only
        return socket.gethostname()
