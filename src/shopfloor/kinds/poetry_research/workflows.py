"""PoetryResearchWorkflow, as seed 003 describes it: turn `poetry-research-execute`, a durable
wait (2 h unless the input says otherwise), turn `poetry-research-synthesize`; each turn
retried 30 s → 5 min, 3 attempts. It is a phased definition run by the phased runner;
`examples/phased/poetry_research.yaml` is the same definition for `shopfloor submit phased`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.jobs import job_input
    from shopfloor.kinds.phased.models import (
        PhasedDefinition,
        PhasedResult,
        PoetryResearchInput,
    )
    from shopfloor.kinds.phased.workflows import PhasedRunner

SEED_RETRY = {"initial": "30s", "maximum": "5m", "backoff": 2.0, "attempts": 3}


def poetry_research_definition(wait: timedelta) -> PhasedDefinition:
    return PhasedDefinition.model_validate(
        {
            "name": "poetry-research",
            "description": "research, let it settle, synthesise (seed 003)",
            "steps": [
                {
                    "id": "execute",
                    "type": "agent_turn",
                    "job_id": "poetry-research-execute",
                    "retry": SEED_RETRY,
                },
                {"id": "settle", "type": "delay", "duration": wait.total_seconds()},
                {
                    "id": "synthesize",
                    "type": "agent_turn",
                    "job_id": "poetry-research-synthesize",
                    "retry": SEED_RETRY,
                },
            ],
        }
    )


@workflow.defn(name="PoetryResearchWorkflow")
class PoetryResearchWorkflow(PhasedRunner):
    @workflow.run
    async def run(self, raw: Any = None) -> PhasedResult:
        # The seed starts it with no input at all (`temporal workflow start --type …`).
        params = job_input(PoetryResearchInput, raw if raw is not None else {})
        return await self.run_definition(poetry_research_definition(params.wait))
