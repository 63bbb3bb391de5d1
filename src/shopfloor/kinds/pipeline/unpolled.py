"""Pipelines started on a task queue no worker polls fail at once, naming the known ones.

Seed 004's starter sends `LogsPipelineWorkflow` to `<service_name>-queue`. Workers poll the
queue of every pipeline they know; for a name none knows (`temporal workflow start --type
LogsPipelineWorkflow --task-queue grafna-queue --input '"grafna"'`) nobody polls that queue,
and the workflow would sit RUNNING for ever, not even failing a workflow task. So each pipeline
worker watches for pipeline workflows that are still waiting for their first workflow task, on
a `…-queue` of its task-queue prefix, when that queue has no poller at all: it then polls that
queue itself, briefly, with a workflow that fails the job (non-retryable, `InvalidJobInput`)
saying which pipelines exist and on which queues, and stops polling once the job has failed.
A worker that knows the pipeline polls its queue, so the watch leaves its jobs alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RawValue
from temporalio.worker import Worker

from shopfloor.jobs import invalid_input

log = logging.getLogger("shopfloor.pipeline")

PIPELINE_TYPES = ("LogsPipelineWorkflow", "PipelineWorkflow")
WATCH_EVERY_S = 2.0
# A workflow this young may still be picked up by a worker that is starting.
GRACE = timedelta(seconds=2)
# How long a stand-in poller waits for the job it came for to fail.
STAND_IN_S = 30.0


KNOWN_QUEUES = "pipeline_known_queues"


@workflow.defn(dynamic=True, sandboxed=False)
class UnknownPipeline:
    """Any workflow type on a queue nobody polls: fails saying which pipelines this worker
    knows, and their queues (asked from a local activity: a workflow reads no worker state)."""

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> None:
        info = workflow.info()
        known: dict[str, str] = await workflow.execute_local_activity(
            KNOWN_QUEUES, start_to_close_timeout=timedelta(seconds=10), result_type=dict
        )
        name: object = None
        if args:
            name = workflow.payload_converter().from_payload(args[0].payload)
        listed = ", ".join(f"{n!r} (queue {q!r})" for n, q in sorted(known.items()))
        if isinstance(name, str) and name in known:
            what = f"pipeline {name!r} runs on task queue {known[name]!r}"
        elif isinstance(name, str):
            what = f"no pipeline definition named {name!r}"
        else:
            what = "no pipeline for this input"
        raise invalid_input(
            f"{what}: no worker polls task queue {info.task_queue!r}, where this "
            f"{info.workflow_type} was started (known: {listed or 'none'})"
        )


async def _has_poller(client: Client, queue: str) -> bool:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(described.pollers)


def _free(busy: set[str], queue: str, _done: asyncio.Task[None]) -> None:
    busy.discard(queue)


async def _waiting_for_first_task(client: Client, workflow_id: str) -> bool:
    """Nothing but started and its first workflow task scheduled (visibility's own
    history_length is 0 while a workflow runs: describe has the real one)."""
    desc = await client.get_workflow_handle(workflow_id).describe()
    return desc.status is WorkflowExecutionStatus.RUNNING and desc.history_length <= 2


async def _stand_in(client: Client, queue: str, workflow_id: str, known: Mapping[str, str]) -> None:
    """Polls `queue` until the job `workflow_id` has failed (or STAND_IN_S passed)."""
    log.warning("no worker polls %s: failing pipeline job %s", queue, workflow_id)
    handle = client.get_workflow_handle(workflow_id)

    @activity.defn(name=KNOWN_QUEUES)
    async def known_queues() -> dict[str, str]:
        return dict(known)

    async with Worker(
        client, task_queue=queue, workflows=[UnknownPipeline], activities=[known_queues]
    ):
        deadline = asyncio.get_running_loop().time() + STAND_IN_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
                return


async def watch_unpolled_queues(
    connect: Callable[[], Awaitable[Client]],
    *,
    prefix: str,
    polled: set[str],
    known: Mapping[str, str],
) -> None:
    """Runs until cancelled: see the module's docstring. `polled`: the queues (prefix included)
    this worker polls; `known`: pipeline name → its queue. Connects (again) while it cannot."""
    while True:
        try:
            client = await connect()
            break
        except Exception as err:  # the server not up yet: the worker itself will say so
            log.debug("watching for unpolled pipeline queues: %s", err)
            await asyncio.sleep(WATCH_EVERY_S)
    types = ", ".join(f"'{t}'" for t in PIPELINE_TYPES)
    query = f"WorkflowType IN ({types}) AND ExecutionStatus = 'Running'"
    busy: set[str] = set()
    stand_ins: set[asyncio.Task[None]] = set()
    try:
        await _watch(client, query, prefix, polled, known, busy, stand_ins)
    finally:
        for task in stand_ins:
            task.cancel()


async def _watch(
    client: Client,
    query: str,
    prefix: str,
    polled: set[str],
    known: Mapping[str, str],
    busy: set[str],
    stand_ins: set[asyncio.Task[None]],
) -> None:
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        try:
            async for wf in client.list_workflows(query):
                queue = wf.task_queue
                young = datetime.now(UTC) - wf.start_time < GRACE
                if (
                    queue in polled
                    or queue in busy
                    or not queue.startswith(prefix)
                    or not queue.endswith("-queue")
                    or young
                    or await _has_poller(client, queue)
                    or not await _waiting_for_first_task(client, wf.id)
                ):
                    continue
                busy.add(queue)
                task = asyncio.create_task(_stand_in(client, queue, wf.id, known))
                stand_ins.add(task)
                task.add_done_callback(stand_ins.discard)
                task.add_done_callback(functools.partial(_free, busy, queue))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the server restarting: look again next time
            log.info("watching for unpolled pipeline queues: %s", err)
