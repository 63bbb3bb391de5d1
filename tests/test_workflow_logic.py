"""Workflow logic with in-process workers on their own task queue (the anchors' pattern):
signals, queries, updates, the progress query, durable timers under time skipping, replay."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from shopfloor.progress import WorkflowProgress
from tests.kinds.steerable.models import (
    LabelChanged,
    Messages,
    Nudge,
    SetLabel,
    SteerInput,
    SteerResult,
)
from tests.kinds.steerable.workflows import SteerableWorkflow


async def start(env: WorkflowEnvironment, queue: str, job: SteerInput) -> WorkflowHandle:
    return await env.client.start_workflow(
        SteerableWorkflow.run, job, id=f"steer-{uuid.uuid4()}", task_queue=queue
    )


async def test_two_hour_nap_is_skipped(time_skipping_env: WorkflowEnvironment) -> None:
    """A 2 h durable timer, with the progress query telling when it wakes, in milliseconds."""
    env = time_skipping_env
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[SteerableWorkflow]):
        handle = await start(env, queue, SteerInput(naps=2, nap_s=3600))
        progress = await handle.query(SteerableWorkflow.progress)
        assert isinstance(progress, WorkflowProgress)
        assert progress.step == "nap 1" and progress.wake_at is not None
        assert "for nap 1 of 2 to end" in progress.status
        result = await handle.result()
        desc = await handle.describe()
    assert result == SteerResult(
        messages=[], label="unlabelled", naps_taken=2, finished_early=False
    )
    assert desc.close_time is not None and desc.start_time is not None
    # Two hours of workflow time passed (the timers fired), without waiting for them.
    assert desc.close_time - desc.start_time >= timedelta(hours=2)
    assert progress.wake_at - desc.start_time >= timedelta(hours=1)


async def test_signal_query_update_and_early_finish(env: WorkflowEnvironment) -> None:
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[SteerableWorkflow]):
        handle = await start(env, queue, SteerInput(naps=3, nap_s=3600))
        await handle.signal(SteerableWorkflow.nudge, Nudge(message="first"))
        await handle.signal(SteerableWorkflow.nudge, Nudge(message="second"))
        assert await handle.query(SteerableWorkflow.messages) == Messages(
            messages=["first", "second"]
        )
        changed = await handle.execute_update(SteerableWorkflow.set_label, SetLabel(label="blue"))
        assert changed == LabelChanged(previous="unlabelled", current="blue")
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(SteerableWorkflow.set_label, SetLabel(label="!bad"))
        assert "may not start with '!'" in str(rejected.value.cause)
        await handle.signal(SteerableWorkflow.finish)
        result = await handle.result()
    assert result.messages == ["first", "second"] and result.label == "blue"
    assert result.finished_early and result.naps_taken == 1


async def test_recorded_history_replays(env: WorkflowEnvironment) -> None:
    """A history recorded from a real run replays against the current code: a change to the
    workflow that would break running jobs fails here (non-determinism)."""
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[SteerableWorkflow]):
        handle = await start(env, queue, SteerInput(naps=2, nap_s=0.2))
        await handle.signal(SteerableWorkflow.nudge, Nudge(message="during the first nap"))
        await handle.execute_update(SteerableWorkflow.set_label, SetLabel(label="green"))
        await handle.result()
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[SteerableWorkflow], data_converter=pydantic_data_converter)
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None
