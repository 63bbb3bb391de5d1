"""ScriptExecutionWorkflow: one durable run of an agent-written script."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import job_input, run_job_activity
    from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
    from shopfloor.kinds.scripts.stubs import RUN_SCRIPT

# Time for set-up and artifact upload on top of the script's own wall timeout.
OVERHEAD = timedelta(seconds=60)


# Outside the SDK's workflow sandbox, which re-imports a workflow's module for every run: a
# third of a short job's worker CPU. What runs here is `jobs.run_job_activity` and input
# validation, deterministic by construction; the replay tests (tests/scripts/test_replay.py)
# hold it to its recorded histories.
@workflow.defn(name="ScriptExecutionWorkflow", sandboxed=False)
class ScriptExecutionWorkflow:
    @workflow.run
    async def run(self, raw: Any = None) -> ScriptResult:
        job = job_input(ScriptInput, raw)
        return await run_job_activity(
            RUN_SCRIPT,
            job,
            start_to_close=timedelta(seconds=job.timeout_s) + OVERHEAD,
            cancelled=lambda result: result.killed_reason == "cancelled",
            # Run locally (`before` runs), then again after its worker was lost.
            restarted=lambda result, before: result.model_copy(
                update={"attempt": result.attempt + before}
            ),
        )
