"""The seed's PoetryResearchWorkflow on task queue `clawfactory` (seed 003: a contract)."""

from __future__ import annotations

from shopfloor.kinds.phased.models import PhasedResult, PoetryResearchInput
from shopfloor.registry import PROGRESS, JobKind

KIND = JobKind(
    name="poetry-research",
    summary="Seed 003's PoetryResearchWorkflow: execute turn, durable wait, synthesize turn.",
    task_queue="clawfactory",
    workflow_type="PoetryResearchWorkflow",
    workflows=["shopfloor.kinds.poetry_research.workflows:PoetryResearchWorkflow"],
    # The same turn activity as phased jobs, registered on this kind's own queue.
    worker="shopfloor.kinds.phased.activities:worker",
    input_model=PoetryResearchInput,
    result_model=PhasedResult,
    queries=[PROGRESS],
    max_concurrent_activities=32,
)
