"""In-process agent workers for tests: the kind's own activities (so tests can count the mock
agent's calls) and workflows, on a task queue of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from shopfloor.artifacts import ArtifactStore, LocalArtifactStore
from shopfloor.kinds.agents.activities import AgentActivities
from shopfloor.kinds.agents.models import CoordinatorResult
from shopfloor.kinds.agents.workflows import (
    AgentCoordinatorWorkflow,
    HelloWorkflow,
    MultiStepWorkflow,
)
from shopfloor.settings import Settings

WORKFLOWS = [AgentCoordinatorWorkflow, HelloWorkflow, MultiStepWorkflow]

SEED_CONFIG: dict[str, Any] = {
    "goalId": "my-goal-123",
    "specType": "hello",
    "specConfig": {"workKind": "greet"},
    "agentType": "mock-agent",
    "agentConfig": {},
    "maxIterations": 10,
}


@dataclass
class AgentWorker:
    client: Client
    queue: str
    acts: AgentActivities
    artifacts: ArtifactStore

    async def start(
        self,
        config: dict[str, Any],
        *,
        workflow: str = "agentCoordinatorWorkflow",
        start_signal: str | None = None,
    ) -> WorkflowHandle:
        # As any client sends it (the seed's TypeScript starter, `temporal workflow start`):
        # JSON the workflow checks itself.
        return await self.client.start_workflow(
            workflow,
            config,
            id=f"agent-{uuid.uuid4()}",
            task_queue=self.queue,
            result_type=CoordinatorResult,
            start_signal=start_signal,  # delivered with the first workflow task: no race
        )

    async def run(
        self, config: dict[str, Any], *, workflow: str = "agentCoordinatorWorkflow"
    ) -> CoordinatorResult:
        return await (await self.start(config, workflow=workflow)).result()


@asynccontextmanager
async def agent_worker(
    client: Client, tmp: Path, settings: Settings | None = None
) -> AsyncIterator[AgentWorker]:
    store = LocalArtifactStore(tmp / "artifacts")
    queue = f"tq-{uuid.uuid4()}"
    async with AgentActivities(settings or Settings(), store) as acts:
        async with Worker(
            client, task_queue=queue, workflows=WORKFLOWS, activities=acts.activities
        ):
            yield AgentWorker(client, queue, acts, store)
