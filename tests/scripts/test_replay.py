"""Versioning: histories recorded before script and simulation jobs ran local-first (one
regular activity each, checked in beside this file by `record_history.py`) replay against the
current workflow code, and only because of the `workflow.patched` guard."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from shopfloor.kinds.scripts.workflows import ScriptExecutionWorkflow
from shopfloor.kinds.simulation.workflows import SimulationWorkflow

HISTORIES = Path(__file__).with_name("histories")


def load(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json("recorded", (HISTORIES / name).read_text())


@pytest.mark.parametrize("name", ["script_v1.json", "simulation_v1.json"])
async def test_recorded_v1_histories_replay_against_the_current_code(name: str) -> None:
    replayer = Replayer(
        workflows=[ScriptExecutionWorkflow, SimulationWorkflow],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(load(name), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="ScriptExecutionWorkflow", sandboxed=False)
class UnguardedLocalFirst:
    """The local-first change without its patch guard."""

    @workflow.run
    async def run(self, raw: Any) -> Any:
        return await workflow.execute_local_activity(
            "run_script", raw, start_to_close_timeout=timedelta(minutes=1)
        )


async def test_the_patch_guard_is_what_keeps_old_runs_replaying() -> None:
    replayer = Replayer(workflows=[UnguardedLocalFirst], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load("script_v1.json"), raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
