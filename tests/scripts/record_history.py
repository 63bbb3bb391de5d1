"""Records the histories that `test_replay.py` replays: one script job and one simulation job
as the workflows ran them before short runs went local-first (one activity each). Run it when
a workflow change is meant to be compatible, check the JSON in, and keep the old files: they
are what running jobs have.

    .venv/bin/python -m tests.scripts.record_history tests/scripts/histories

The activities here are stand-ins with the real names and result types: a replay never runs
an activity, it checks the workflow's commands against the recorded events.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from shopfloor.devserver import temporal_binary
from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
from shopfloor.kinds.scripts.workflows import ScriptExecutionWorkflow
from shopfloor.kinds.simulation.models import SimulationRequest, SimulationResult
from shopfloor.kinds.simulation.workflows import SimulationWorkflow

SCRIPT = ScriptInput(source='print("hi")\n')
SCENE = {"scene": {"kind": "source", "source": "raise SystemExit(1)"}}


@activity.defn(name="run_script")
async def run_script(job: ScriptInput) -> ScriptResult:
    return ScriptResult(exit_code=0, stdout_tail="hi\n", duration_s=0.01)


@activity.defn(name="run_simulation")
async def run_simulation(request: SimulationRequest) -> SimulationResult:
    # A simulation's result is big to write by hand; a failed run is as good a history.
    raise ApplicationError("stand-in: no simulation here", non_retryable=True)


async def record(out: Path) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=temporal_binary()
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    async with (
        env,
        Worker(
            env.client,
            task_queue=queue,
            workflows=[ScriptExecutionWorkflow, SimulationWorkflow],
            activities=[run_script, run_simulation],
        ),
    ):
        for name, workflow, arg in [
            ("script_v1.json", "ScriptExecutionWorkflow", SCRIPT),
            ("simulation_v1.json", "SimulationWorkflow", SCENE),
        ]:
            handle = await env.client.start_workflow(
                workflow, arg, id=f"recorded-{name}-{queue}", task_queue=queue
            )
            try:
                await handle.result()
            except WorkflowFailureError:
                pass
            history = await handle.fetch_history()
            (out / name).write_text(history.to_json())
            print(f"wrote {out / name} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1])))
