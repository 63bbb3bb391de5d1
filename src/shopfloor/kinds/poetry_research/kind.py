"""The seed's PoetryResearchWorkflow on task queue `clawfactory` (seed 003: a contract)."""

from __future__ import annotations

from shopfloor.kinds.phased.kind import PAGE, run_outcome
from shopfloor.kinds.phased.models import PhasedResult, PoetryResearchInput
from shopfloor.registry import PROGRESS, JobKind, WorkerBundle

KIND = JobKind(
    name="poetry-research",
    summary="Seed 003's PoetryResearchWorkflow: execute turn, durable wait, synthesize turn.",
    task_queue="clawfactory",
    workflow_type="PoetryResearchWorkflow",
    input_model=PoetryResearchInput,
    result_model=PhasedResult,
    outcome=run_outcome,
    queries=[PROGRESS],
    max_concurrent_activities=32,
    bundle=WorkerBundle(
        workflows=["shopfloor.kinds.poetry_research.workflows:PoetryResearchWorkflow"],
        # The same turn activity as phased jobs, registered on this kind's own queue.
        run_context="shopfloor.kinds.phased.activities:worker",
    ),
    presentation=PAGE,  # the phased page: its input names no steps, its result does
)
