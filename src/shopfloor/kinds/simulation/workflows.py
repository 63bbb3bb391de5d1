"""SimulationWorkflow: one durable simulation run (seed 001/000)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import job_input, run_job_activity
    from shopfloor.kinds.simulation.models import SimulationRequest, SimulationResult

START_TO_CLOSE = timedelta(minutes=5)


@workflow.defn(name="SimulationWorkflow")
class SimulationWorkflow:
    @workflow.run
    async def run(self, raw: Any) -> SimulationResult:
        request = job_input(SimulationRequest, raw)
        return await run_job_activity(
            "run_simulation",
            request,
            result_type=SimulationResult,
            start_to_close=START_TO_CLOSE,
            cancelled=lambda result: result.reason == "cancelled",
            local_first=True,
        )
