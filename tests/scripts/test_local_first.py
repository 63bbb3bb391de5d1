"""Local-first runs of user code (kinds that declare `JobKind.local_first`).

A script or simulation starts as a local activity in the worker that runs the job's workflow
task; a run still going after the worker's hand-off budget is handed, running, to the same
activity on a task queue only that worker polls. Here: the hand-over itself in-process
(attempts made with `ActivityEnvironment`, as in test_outage.py), the run slots that bound
runs across it, then whole jobs on the session's dev server — what their histories hold, and
a cancel that comes before the hand-off activity starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from shopfloor.devserver import DevServer
from shopfloor.jobs import HANDED_OFF
from shopfloor.kinds.scripts.activities import ScriptActivities
from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
from shopfloor.kinds.scripts.workflows import ScriptExecutionWorkflow
from shopfloor.outcome import OutcomeInterceptor
from shopfloor.registry import kind_named, queue_for
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from shopfloor.usercode import Runs, RunSlots, Zygotes, handoff_queue
from shopfloor.worker import build_workers, kind_resources
from tests import test_outage as outage
from tests.test_outage import job, lines, until

# test_outage's fixtures: an effects file scripts append to, the script kind's worker side.
effects = outage.effects
shared = outage.shared

QUEUE = kind_named("script").task_queue  # its slots are the kind's (no queue prefix here)


def worker_with(
    shared: tuple, *, budget_s: float, window_s: float = 60, slots: int | None = None
) -> tuple[ScriptActivities, Runs]:
    """The script kind's activities with a `Runs` registry, hand-off budget and slots of
    their own."""
    ctx, base = shared
    runs = Runs(window_s)
    settings = ctx.settings
    if slots is not None:
        settings = settings.model_copy(update={"worker_concurrency": {"script": slots}})
        settings = settings.model_copy(update={"task_queue_prefix": ""})
    own: Zygotes = dataclasses.replace(
        base,
        runs=runs,
        handoff_after_s=budget_s,
        slots=RunSlots(settings, [kind_named("script")]) if slots is not None else None,
    )
    return ScriptActivities(ctx, own), runs


def attempt(workflow_id: str, *, local: bool, n: int = 1) -> ActivityEnvironment:
    """An attempt of the job's local activity (`local`), or of the activity on this worker's
    hand-off queue that takes its run over."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        workflow_id=workflow_id,
        workflow_run_id="run-1",
        activity_id="1" if local else "2",
        activity_type="run_script",
        is_local=local,
        task_queue=QUEUE if local else handoff_queue(QUEUE),
        attempt=n,
        heartbeat_timeout=None,
    )
    return env


async def hand_off(acts: ScriptActivities, tag: str, script: ScriptInput) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await attempt(tag, local=True).run(acts.run_script, script)
    return raised.value


async def test_a_short_local_run_returns_its_result(shared, effects) -> None:
    acts, runs = worker_with(shared, budget_s=5)
    result = await attempt("short", local=True).run(acts.run_script, job(effects, "short", 0.1))
    assert result.exit_code == 0 and "finished short" in result.stdout_tail
    assert "result.txt" in result.artifacts and len(runs.executions) == 0
    await runs.close()


async def test_a_long_local_run_is_handed_over_and_taken_over_running(shared, effects) -> None:
    acts, runs = worker_with(shared, budget_s=0.3)
    tag = "handed"
    err = await hand_off(acts, tag, job(effects, tag, 1.5))
    assert err.type == HANDED_OFF and err.non_retryable
    # The queue only this worker polls, and the runs of the job so far (its own).
    assert err.details == (handoff_queue(QUEUE), 1)
    assert lines(effects, tag, "start") == 1 and lines(effects, tag, "end") == 0
    assert len(runs.executions) == 1  # still running, kept for the activity

    beats: list = []
    taker = attempt(tag, local=False)
    taker.on_heartbeat = lambda *d: beats.append(d)
    result = await taker.run(acts.run_script, job(effects, tag, 1.5))
    assert result.exit_code == 0 and "finished handed" in result.stdout_tail
    assert lines(effects, tag, "start") == 1 and lines(effects, tag, "end") == 1
    assert beats and "elapsed_s" in beats[-1][0]  # the taking activity heartbeats
    assert len(runs.executions) == 0
    await runs.close()


async def test_a_retried_local_attempt_takes_the_run_its_lost_task_handed_over(
    shared, effects
) -> None:
    """The workflow task that carried the hand-off was lost (a server away): the task's retry
    runs the local attempt again, which finds the run going and waits on for it."""
    acts, runs = worker_with(shared, budget_s=0.5)
    tag = "rerun"
    await hand_off(acts, tag, job(effects, tag, 0.8))
    result = await attempt(tag, local=True).run(acts.run_script, job(effects, tag, 0.8))
    assert result.exit_code == 0 and lines(effects, tag, "start") == 1
    assert len(runs.executions) == 0
    await runs.close()


async def test_a_retried_local_attempt_returns_the_result_its_lost_task_had(
    shared, effects
) -> None:
    acts, runs = worker_with(shared, budget_s=5)
    tag = "kept"
    first = await attempt(tag, local=True).run(acts.run_script, job(effects, tag, 0.1))
    again = await attempt(tag, local=True).run(acts.run_script, job(effects, tag, 0.1))
    assert again == first and lines(effects, tag, "start") == 1
    await runs.close()


async def test_a_requested_cancel_of_a_local_run_kills_it_and_says_so(shared, effects) -> None:
    acts, runs = worker_with(shared, budget_s=30)
    tag = "cancel-local"
    env = attempt(tag, local=True)
    task = asyncio.create_task(env.run(acts.run_script, job(effects, tag, 60)))
    await until(lambda: lines(effects, tag, "start") == 1, what="the script to start")
    env.cancel(ActivityCancellationDetails(cancel_requested=True))
    result = await task
    assert result.killed_reason == "cancelled" and len(runs.executions) == 0
    ticks = lines(effects, tag, "tick")
    await asyncio.sleep(0.5)
    assert lines(effects, tag, "tick") == ticks
    await runs.close()


async def test_without_adoption_a_local_attempt_hands_off_before_starting(shared, effects) -> None:
    acts, runs = worker_with(shared, budget_s=1, window_s=0)
    err = await hand_off(acts, "no-window", job(effects, "no-window", 0.1))
    assert err.type == HANDED_OFF and lines(effects, "no-window", "start") == 0
    result = await attempt("no-window", local=False).run(
        acts.run_script, job(effects, "no-window", 0.1)
    )
    assert result.exit_code == 0 and lines(effects, "no-window", "start") == 1
    await runs.close()


async def test_a_handed_over_run_keeps_its_slot(shared, effects) -> None:
    """One slot: a second job's local attempt waits for the first job's run, which holds the
    slot while it goes on handed over, and starts once that run has ended."""
    acts, runs = worker_with(shared, budget_s=0.2, slots=1)
    await hand_off(acts, "slot-a", job(effects, "slot-a", 1.0))
    second = asyncio.create_task(
        attempt("slot-b", local=True).run(acts.run_script, job(effects, "slot-b", 0.1))
    )
    await asyncio.sleep(0.5)
    assert lines(effects, "slot-b", "start") == 0, "a second run started beside the first"
    first = await attempt("slot-a", local=False).run(acts.run_script, job(effects, "slot-a", 1.0))
    assert first.exit_code == 0
    assert (await second).exit_code == 0
    log = effects.read_text().splitlines()
    assert log.index("slot-b start") > log.index("slot-a end")
    await runs.close()


# -- whole jobs on the session's dev server ---------------------------------------------------


@contextlib.asynccontextmanager
async def script_workers(
    client: Client, tmp_path: Path, *, handoff: bool = True
) -> AsyncIterator[tuple[str, list[Worker]]]:
    """The script kind's Workers as `shopfloor worker` builds them, in this process; without
    `handoff` the hand-off queue's Worker is built but not run (the caller runs it)."""
    outage.EFFECTS_BASE.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        temporal_address="unused",
        data_dir=tmp_path,
        task_queue_prefix=f"lf-{uuid.uuid4().hex[:8]}-",
        sandbox_shared_dirs=[outage.EFFECTS_BASE],
    )
    served = [kind_named("script")]
    async with kind_resources(settings, served) as plans, contextlib.AsyncExitStack() as stack:
        workers = build_workers(client, settings, plans)
        shared_queue = queue_for(served[0], settings)
        for w in workers:
            if handoff or w.task_queue == shared_queue:
                await stack.enter_async_context(w)
        yield shared_queue, workers


async def events_of(client: Client, job_id: str) -> list:
    """The job's history events, once its history is checked to replay on the current code."""
    history = await client.get_workflow_handle(job_id).fetch_history()
    # With the interceptors the worker runs them with: the outcome one issues commands too.
    replayer = Replayer(
        workflows=[ScriptExecutionWorkflow],
        data_converter=pydantic_data_converter,
        interceptors=[OutcomeInterceptor()],
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    return list(history.events)


@pytest.fixture
async def client(dev_server: DevServer) -> Client:
    return await connect(Settings(temporal_address=dev_server.address))


async def test_a_short_script_job_is_one_workflow_task(client: Client, tmp_path: Path) -> None:
    async with script_workers(client, tmp_path) as (queue, _):
        job_id = f"short-{uuid.uuid4().hex[:8]}"
        result = await client.execute_workflow(
            "ScriptExecutionWorkflow",
            ScriptInput(source="print(6 * 7)"),
            id=job_id,
            task_queue=queue,
            result_type=ScriptResult,
        )
    assert result.exit_code == 0 and result.stdout_tail == "42\n"
    types = [e.event_type for e in await events_of(client, job_id)]
    assert types.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in types
    # The patches (local-first, outcome) and the local run: still one workflow task.
    assert types.count(EventType.EVENT_TYPE_MARKER_RECORDED) == 3


async def test_a_long_script_job_is_handed_over_once(client: Client, tmp_path: Path) -> None:
    async with script_workers(client, tmp_path) as (queue, _):
        job_id = f"long-{uuid.uuid4().hex[:8]}"
        source = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)\n"
        result = await client.execute_workflow(
            "ScriptExecutionWorkflow",
            ScriptInput(source=source),
            id=job_id,
            task_queue=queue,
            result_type=ScriptResult,
        )
    assert result.exit_code == 0 and result.stdout_tail == "0\n1\n2\n" and result.attempt == 1
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in await events_of(client, job_id)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [s.task_queue.name for s in scheduled] == [handoff_queue(queue)]
    assert scheduled[0].activity_type.name == "run_script"


async def test_a_cancel_before_the_hand_off_activity_starts_kills_the_run(
    client: Client, tmp_path: Path, effects
) -> None:
    """The hand-off activity is cancelled before any worker took it (its Worker is not
    polling yet): the workflow asks that worker to drop the run it keeps, and it does."""
    tag = "cancel-before-start"
    async with script_workers(client, tmp_path, handoff=False) as (queue, workers):
        job_id = f"{tag}-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(
            "ScriptExecutionWorkflow", job(effects, tag, 60), id=job_id, task_queue=queue
        )
        await until(
            lambda: lines(effects, tag, "tick") > 15, what="the run to go past its local budget"
        )
        await handle.cancel()
        await asyncio.sleep(1)  # the workflow sees the cancel and asks for the drop
        (handoff_worker,) = [w for w in workers if w.task_queue == handoff_queue(queue)]
        async with handoff_worker:
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            assert isinstance(failed.value.cause, CancelledError)
            ticks = lines(effects, tag, "tick")
            await asyncio.sleep(1.0)
            assert lines(effects, tag, "tick") == ticks, "the handed-over run goes on"
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in await events_of(client, job_id)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["run_script", "shopfloor.drop_handed_over"]
