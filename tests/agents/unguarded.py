"""A workflow for the replay test only: the v2 change without its `workflow.patched` guard.

A module of its own because the workflow sandbox re-imports a workflow's module: this one
imports workflow code only."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shopfloor.kinds.agents.models import CoordinatorConfig, CoordinatorResult
    from shopfloor.kinds.agents.workflows import MultiStepWorkflow


@workflow.defn(name="multiStepWorkflow")
class UnguardedMultiStep(MultiStepWorkflow):
    def _batched_store(self) -> bool:
        return True

    @workflow.run
    async def run(self, config: CoordinatorConfig) -> CoordinatorResult:
        return await self.coordinate(config)
