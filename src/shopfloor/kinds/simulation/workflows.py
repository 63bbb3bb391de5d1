"""SimulationWorkflow: one durable simulation run (seed 001/000)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import job_input, run_job_activity
    from shopfloor.kinds.simulation.models import SimulationRequest, SimulationResult
    from shopfloor.kinds.simulation.stubs import RUN_SIMULATION

START_TO_CLOSE = timedelta(minutes=5)


# Outside the SDK's workflow sandbox, which re-imports a workflow's module for every run: a
# third of a short job's worker CPU. What runs here is `jobs.run_job_activity` and input
# validation, deterministic by construction; the replay tests (tests/scripts/test_replay.py)
# hold it to its recorded histories.
@workflow.defn(name="SimulationWorkflow", sandboxed=False)
class SimulationWorkflow:
    @workflow.run
    async def run(self, raw: Any = None) -> SimulationResult:
        request = job_input(SimulationRequest, raw)
        return await run_job_activity(
            RUN_SIMULATION,
            request,
            start_to_close=START_TO_CLOSE,
            cancelled=lambda result: result.reason == "cancelled",
        )
