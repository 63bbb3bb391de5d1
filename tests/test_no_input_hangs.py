"""No input ever hangs (issue 22): every workflow type of every registered kind, started with
the real `temporal` CLI against a real dev server and a real worker with no input, `null`,
`[]` or a wrong nested type, ends FAILED at once (non-retryable) with a message naming the
problem — never RUNNING with a workflow task failing for ever.

Parametrized over the registry: a new kind's workflow types are covered without editing this
file (a wrong nested type needs one line in NESTED, which the test asks for)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from shopfloor.devserver import DevServer, temporal_binary
from shopfloor.jobs import INVALID_INPUT, job_input
from shopfloor.registry import JobKind, kinds, takes_any_input
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.helpers import Stack

# Start → FAILED, as the server records it (close time − start time).
FAILS_WITHIN_S = 5.0

# A wrong type deep inside each workflow type's input, and what the failure must name.
_PIPELINE_BAD = (
    {"definition": {"name": "p", "services": [{"name": "a", "command": 5}]}},
    "definition.services.0.command",
)
_AGENT_BAD = ({"goalId": "g", "agentConfig": {"timeoutS": "soon"}}, "timeoutS")
NESTED: dict[str, tuple[Any, str]] = {
    "ScriptExecutionWorkflow": ({"source": "print(1)", "files": [{"path": 5}]}, "files.0.path"),
    "SimulationWorkflow": (
        {"scene": {"kind": "source", "source": "x"}, "options": {"duration_s": "soon"}},
        "options.duration_s",
    ),
    "PhasedWorkflow": (
        {"definition": {"name": "x", "steps": [{"id": "a", "type": "delay", "duration": []}]}},
        "definition.steps.0.delay.duration",
    ),
    "PoetryResearchWorkflow": ({"wait": []}, "wait"),
    "agentCoordinatorWorkflow": _AGENT_BAD,
    "helloWorkflow": _AGENT_BAD,
    "multiStepWorkflow": (
        {"goalId": "g", "agentType": "anthropic-agent", "agentConfig": {"maxTokens": "many"}},
        "maxTokens",
    ),
    "PipelineWorkflow": _PIPELINE_BAD,
    "LogsPipelineWorkflow": _PIPELINE_BAD,
}
# Seed 003 starts PoetryResearchWorkflow with no input at all: its defaults are the job.
NO_INPUT_IS_A_JOB = {"PoetryResearchWorkflow"}


def _workflow_types() -> Iterator[tuple[JobKind, str]]:
    for kind in kinds().values():
        for workflow_type in (kind.workflow_type, *kind.other_workflow_types):
            yield kind, workflow_type


CASES = [
    pytest.param(kind.name, wt, how, id=f"{wt}-{how}")
    for kind, wt in _workflow_types()
    for how in ("no-input", "null", "empty-array", "nested")
]


def _cli(dev_server: DevServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [temporal_binary(), *args, "--address", dev_server.address],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(dev_server: DevServer, queue: str, workflow_type: str, how: str) -> str:
    workflow_id = f"noinput-{workflow_type}-{how}-{uuid.uuid4().hex[:6]}"
    args = ["workflow", "start", "--type", workflow_type, "--task-queue", queue]
    args += ["--workflow-id", workflow_id]
    if how == "null":
        args += ["--input", "null"]
    elif how == "empty-array":
        args += ["--input", "[]"]
    elif how == "nested":
        if workflow_type not in NESTED:
            pytest.fail(f"add a wrong nested input of {workflow_type} to NESTED")
        args += ["--input", json.dumps(NESTED[workflow_type][0])]
    started = _cli(dev_server, *args)
    assert started.returncode == 0, started.stderr
    return workflow_id


async def _outcome(client: Client, workflow_id: str) -> tuple[str, float, ApplicationError]:
    handle = client.get_workflow_handle(workflow_id)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=60)
    desc = await handle.describe()
    assert desc.status is WorkflowExecutionStatus.FAILED
    assert desc.close_time is not None
    took = (desc.close_time - desc.start_time).total_seconds()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    return cause.message, took, cause


@pytest.mark.parametrize(("kind_name", "workflow_type", "how"), CASES)
async def test_bad_input_fails_at_once_naming_the_problem(
    stack: Stack, dev_server: DevServer, kind_name: str, workflow_type: str, how: str
) -> None:
    kind = kinds()[kind_name]
    queue = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + kind.task_queue
    client = await connect(Settings(temporal_address=dev_server.address))
    workflow_id = _start(dev_server, queue, workflow_type, how)
    if workflow_type in NO_INPUT_IS_A_JOB and how in ("no-input", "null"):
        # A job with its defaults: its first workflow task must complete (not hang), then
        # it is not this test's business.
        handle = client.get_workflow_handle(workflow_id)
        for _ in range(100):
            events = [e async for e in handle.fetch_history_events()]
            if any(e.HasField("workflow_task_completed_event_attributes") for e in events):
                break
            assert not any(e.HasField("workflow_task_failed_event_attributes") for e in events)
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"{workflow_type} with {how}: no workflow task completed")
        if (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test: no input is a valid job of this type")
        return
    message, took, cause = await _outcome(client, workflow_id)
    print(f"{workflow_type} × {how}: FAILED after {took:.2f} s: {message}")
    assert cause.non_retryable and cause.type == INVALID_INPUT, (cause.type, message)
    assert took < FAILS_WITHIN_S, f"{workflow_type} × {how} took {took:.1f} s to fail: {message}"
    if how == "nested":
        assert NESTED[workflow_type][1] in message, message
    elif how == "empty-array":
        assert workflow_type in message and "got a JSON array" in message, message
    else:
        assert workflow_type in message and "got no input" in message, message


async def test_logs_pipeline_for_an_unknown_name_fails_naming_the_known_ones(
    stack: Stack, dev_server: DevServer
) -> None:
    queue = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "logs-queue"
    workflow_id = f"logs-unknown-{uuid.uuid4().hex[:6]}"
    args = ["workflow", "start", "--type", "LogsPipelineWorkflow", "--task-queue", queue]
    started = _cli(dev_server, *args, "--workflow-id", workflow_id, "--input", '"no-such"')
    assert started.returncode == 0, started.stderr
    client = await connect(Settings(temporal_address=dev_server.address))
    message, took, cause = await _outcome(client, workflow_id)
    print(f"LogsPipelineWorkflow × 'no-such': FAILED after {took:.2f} s: {message}")
    assert cause.non_retryable
    assert "'no-such'" in message and "known: ['logs'" in message, message
    assert took < FAILS_WITHIN_S, message


@workflow.defn(name="NeedsAnArgument", sandboxed=False)
class NeedsAnArgument:
    @workflow.run
    async def run(self, job: dict[str, Any]) -> None:
        return None


def test_a_worker_refuses_a_workflow_whose_run_requires_an_argument() -> None:
    """The guard that keeps a future kind from forgetting: `WorkerBundle.load_workflows` (what
    the worker registers) checks every workflow of every kind."""
    for kind in kinds().values():
        kind.load_workflows()
    with pytest.raises(TypeError, match=r"NeedsAnArgument.run requires job: take the raw input"):
        takes_any_input(NeedsAnArgument)


def test_job_input_never_raises_anything_but_a_non_retryable_input_error() -> None:
    from shopfloor.kinds.poetry_research.workflows import PoetryResearchInput

    for raw in (None, [], "x", 3, True, {"wait": []}, {"wait": {"a": 1}}, {"nope": 1}):
        with pytest.raises(ApplicationError) as err:
            job_input(PoetryResearchInput, raw)
        assert err.value.non_retryable and err.value.type == INVALID_INPUT


async def test_logs_pipeline_on_a_queue_nobody_polls_fails_naming_the_known_ones(
    stack: Stack, dev_server: DevServer
) -> None:
    """Seed 004's starter sends a service name to `<name>-queue`: for a name no worker knows,
    no worker polls that queue. A pipeline worker notices and fails the job (unpolled.py)."""
    queue = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "grafna-queue"
    workflow_id = f"logs-unpolled-{uuid.uuid4().hex[:6]}"
    args = ["workflow", "start", "--type", "LogsPipelineWorkflow", "--task-queue", queue]
    started = _cli(dev_server, *args, "--workflow-id", workflow_id, "--input", '"grafna"')
    assert started.returncode == 0, started.stderr
    client = await connect(Settings(temporal_address=dev_server.address))
    try:
        message, took, cause = await _outcome(client, workflow_id)
    except BaseException:
        print((stack.tmp / "worker-0.log").read_text()[-5000:])
        raise
    print(f"LogsPipelineWorkflow × 'grafna' on grafna-queue: FAILED after {took:.2f} s: {message}")
    assert cause.non_retryable and cause.type == INVALID_INPUT
    assert "no pipeline definition named 'grafna'" in message, message
    assert f"no worker polls task queue {queue!r}" in message and "'logs' (queue" in message
