"""Any client — here the `temporal` CLI with plain JSON — gets the same answers: good input
runs, malformed input ends the workflow FAILED at once with a message naming the problem."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from shopfloor.devserver import DevServer, temporal_binary
from tests.helpers import Stack

MALFORMED = [
    (
        "ScriptExecutionWorkflow",
        "simulation-task-queue",
        '"print(1)"',
        "one JSON object (fields: source",
    ),
    ("ScriptExecutionWorkflow", "simulation-task-queue", "42", "got a number"),
    (
        "ScriptExecutionWorkflow",
        "simulation-task-queue",
        '{"source": "print(1)", "timeout_sec": 5}',
        "timeout_sec",
    ),
    ("SimulationWorkflow", "simulation-task-queue", '{"scene": {"source": "x = 1"}}', "scene"),
    (
        "SimulationWorkflow",
        "simulation-task-queue",
        '{"scene": {"kind": "source", "source": "x"}, "options": {"duraton_s": 1}}',
        "duraton_s",
    ),
    ("PhasedWorkflow", "phased-queue", '{"definition": {"name": "x", "steps": []}}', "steps"),
    ("helloWorkflow", "agent-coordinator-queue", '{"goalId": 7}', "goalId"),
]


def temporal(dev_server: DevServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [temporal_binary(), "workflow", *args, "--address", dev_server.address],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("workflow", "queue", "payload", "needle"), MALFORMED)
def test_malformed_input_fails_at_once_naming_the_problem(
    stack: Stack, dev_server: DevServer, workflow: str, queue: str, payload: str, needle: str
) -> None:
    job_id = f"malformed-{uuid.uuid4().hex[:8]}"
    prefix = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"]
    started = temporal(
        dev_server,
        "start",
        "--type",
        workflow,
        "--task-queue",
        prefix + queue,
        "--workflow-id",
        job_id,
        "--input",
        payload,
    )
    assert started.returncode == 0, started.stderr
    began = time.monotonic()
    shown = stack.http.get(f"/jobs/{job_id}/result", params={"wait": 30}).json()
    # Not asserted as a timing (machines vary): well under the 30 s it could wait.
    print(
        f"{workflow} {payload[:40]} ended {shown['status']} after {time.monotonic() - began:.2f}s"
    )
    assert shown["status"] == "FAILED", shown
    assert needle in shown["error"] and "invalid" in shown["error"], shown["error"]
    described = json.loads(
        temporal(dev_server, "describe", "--workflow-id", job_id, "-o", "json").stdout
    )
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
