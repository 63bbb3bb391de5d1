"""Versioning: a history recorded from a real run (checked in beside this file) replays against
the current workflow code. A change that would break running jobs fails here."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.agents.support import SEED_CONFIG, WORKFLOWS, agent_worker
from tests.agents.unguarded import UnguardedMultiStep

HISTORIES = Path(__file__).with_name("histories")


def load(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json("recorded", (HISTORIES / name).read_text())


async def test_recorded_v1_history_replays_against_the_current_code() -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        load("multi_step_v1.json"), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


async def test_the_patch_guard_is_what_keeps_old_runs_replaying() -> None:
    """Without the guard the same history is non-deterministic: the replay test can fail."""
    replayer = Replayer(workflows=[UnguardedMultiStep], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        load("multi_step_v1.json"), raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()


async def test_new_runs_store_artifacts_in_one_activity(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(SEED_CONFIG, workflow="helloWorkflow")
        result = await handle.result()
        history = await handle.fetch_history()
    assert set(result.artifacts) == {"greeting", "final-state"}
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["run_agent_step", "store_agent_artifacts"]
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    assert (
        await replayer.replay_workflow(history, raise_on_replay_failure=False)
    ).replay_failure is None
