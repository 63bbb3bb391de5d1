"""Versioning: a history recorded from a real run (checked in beside this file) replays against
the current workflow code. A change that would break running jobs fails here."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.agents.support import WORKFLOWS

HISTORIES = Path(__file__).with_name("histories")


def load(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json("recorded", (HISTORIES / name).read_text())


async def test_recorded_v1_history_replays_against_the_current_code() -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        load("multi_step_v1.json"), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure
