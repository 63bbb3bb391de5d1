"""Agent jobs through real processes: a worker and a controller as subprocesses, the
`temporal` CLI, the shopfloor CLI, a worker SIGKILLed mid-call, and no key in any history."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from shopfloor.devserver import DevServer, temporal_binary
from shopfloor.kinds.agents.models import CoordinatorConfig, CoordinatorResult
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.agents.fake_llm import FakeLLM
from tests.agents.support import SEED_CONFIG
from tests.helpers import REPO, Stack, wait_until

SECRET = "sk-ant-stack-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def agent_stack(
    dev_server: DevServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("agents"),
        extra_env={
            "SHOPFLOOR_ANTHROPIC_API_KEY": SECRET,
            "SHOPFLOOR_ANTHROPIC_BASE_URL": fake_llm.url,
            "SHOPFLOOR_EGRESS_ALLOW": fake_llm.url.removeprefix("http://"),
        },
    )
    s.start_worker("--kind", "agent")
    s.start_controller()
    yield s
    s.stop()


def queue(stack: Stack) -> str:
    return stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "agent-coordinator-queue"


def temporal(dev_server: DevServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [temporal_binary(), *args, "--address", dev_server.address],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_temporal_cli_starts_hello_workflow_with_the_seed_json(
    agent_stack: Stack, dev_server: DevServer
) -> None:
    """Seed 002's contract: workflow type, task queue and the config as plain JSON."""
    workflow_id = f"hello-{uuid.uuid4().hex[:8]}"
    started = temporal(
        dev_server, "workflow", "start", "--type", "helloWorkflow",
        "--task-queue", queue(agent_stack), "--workflow-id", workflow_id,
        "--input", json.dumps(SEED_CONFIG),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    done = temporal(dev_server, "workflow", "result", "--workflow-id", workflow_id,
                    "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["status"] == "COMPLETED"
    assert result["annotations"] == {"greeting": "Hello, world!"}
    assert result["goalId"] == "my-goal-123"
    assert result["artifacts"]["greeting"].endswith("/my-goal-123/artifacts/greeting.json")


async def test_controller_accepts_a_key_masks_it_and_the_result_says_so(
    agent_stack: Stack, dev_server: DevServer
) -> None:
    """Seed 002's config with `agentApiKey` set: 2xx, the goal completes on the mock agent, the
    key reaches no history (the controller masks it) and the result says it was ignored."""
    key = "sk-ant-http-" + uuid.uuid4().hex
    r = agent_stack.http.post(
        "/jobs/agent", json={**SEED_CONFIG, "goalId": "with-key", "agentApiKey": key}
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    result = agent_stack.result(job_id)["result"]
    assert result["status"] == "COMPLETED"
    (warning,) = result["warnings"]
    assert "agentApiKey was ignored" in warning and "in no history" in warning
    client = await connect(Settings(temporal_address=dev_server.address))
    history = await client.get_workflow_handle(job_id).fetch_history()
    assert key not in history.to_json()


def test_controller_accepts_the_claude_example(agent_stack: Stack) -> None:
    """examples/agents/claude.json (`maxTokens` is an option, not a secret's name)."""
    example = json.loads((REPO / "examples" / "agents" / "claude.json").read_text())
    r = agent_stack.http.post("/jobs/agent", json={**example, "goalId": "claude-example"})
    assert 200 <= r.status_code < 300, r.text
    agent_stack.http.post(f"/jobs/{r.json()['job_id']}/cancel")


def test_http_job_with_progress_state_query_and_artifacts(agent_stack: Stack) -> None:
    job = {
        "goalId": "over-http",
        "specType": "multi-step",
        "specConfig": {"task": "tidy the shop", "maxSteps": 2},
        "agentConfig": {"delayMs": 1500},
        "maxIterations": 10,
    }
    job_id = agent_stack.submit("agent", job)
    progress = wait_until(
        lambda: (
            (agent_stack.http.get(f"/jobs/{job_id}").json().get("workflow_progress") or {})
            if "iteration" in str(agent_stack.http.get(f"/jobs/{job_id}").json())
            else None
        ),
        what="progress with the iteration",
    )
    assert progress["details"]["iteration"] >= 1 and progress["step"]
    state = agent_stack.http.get(f"/jobs/{job_id}/queries/state").json()
    assert state["state"]["goalId"] == "over-http" and state["maxIterations"] == 10
    result = agent_stack.result(job_id)["result"]
    assert result["status"] == "COMPLETED"
    assert [s["id"] for s in result["steps"]] == ["plan-1", "work-1", "work-2", "review-1"]
    link = agent_stack.http.get(f"/artifacts/{job_id}/over-http/artifacts/review.json")
    assert link.status_code == 200 and link.json() == "approved"


def test_cli_submits_a_goal_file(agent_stack: Stack, tmp_path: Path) -> None:
    goal = tmp_path / "goal.json"
    goal.write_text(json.dumps(SEED_CONFIG))
    env = {**agent_stack.env, "SHOPFLOOR_CONTROLLER_URL": agent_stack.url}
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", "submit", "agent", str(goal), "--wait", "--json",
         "-o", "goalId=from-the-cli"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["status"] == "COMPLETED" and result["goalId"] == "from-the-cli"
    seed = tmp_path / "seed.json"  # the seed's config, its key included
    seed.write_text(json.dumps({**SEED_CONFIG, "agentApiKey": "sk-ant-from-a-file"}))
    accepted = subprocess.run(
        [sys.executable, "-m", "shopfloor", "submit", "agent", str(seed), "--wait", "--json",
         "-o", "goalId=key-from-the-cli"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    result = json.loads(accepted.stdout)["result"]
    assert result["status"] == "COMPLETED" and "in no history" in result["warnings"][0]


async def test_no_secret_in_any_history(
    agent_stack: Stack, dev_server: DevServer, fake_llm: FakeLLM
) -> None:
    client = await connect(Settings(temporal_address=dev_server.address))
    job = {**SEED_CONFIG, "goalId": "secretive", "agentType": "anthropic-agent",
           "agentConfig": {"system": f"429-once:{uuid.uuid4()}"}}  # fmt: skip
    result = agent_stack.run("agent", job)["result"]
    assert result["status"] == "COMPLETED"
    sent = [r["headers"] for r in fake_llm.requests if r["body"].get("system") == job[
        "agentConfig"]["system"]]  # fmt: skip
    assert any(SECRET in str(h) for h in sent)  # the worker did use the key…
    histories = 0
    async for wf in client.list_workflows(f'TaskQueue="{queue(agent_stack)}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        assert SECRET not in history.to_json(), f"key in the history of {wf.id}"
        histories += 1
    assert histories >= 2  # …and it is in none of the histories


async def test_worker_killed_during_an_agent_call(dev_server: DevServer, tmp_path: Path) -> None:
    stack = Stack(temporal_address=dev_server.address, tmp=tmp_path)
    try:
        first = stack.start_worker("--kind", "agent")
        client: Client = await connect(Settings(temporal_address=dev_server.address))
        config = CoordinatorConfig.model_validate(
            {**SEED_CONFIG, "goalId": "crash", "agentConfig": {"delayMs": 3000}}
        )
        handle = await client.start_workflow(
            "helloWorkflow", config, id=f"crash-{uuid.uuid4().hex[:8]}",
            task_queue=queue(stack), result_type=CoordinatorResult,
        )  # fmt: skip

        async def calling() -> bool:
            desc = await handle.describe()
            return any(
                p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for p in desc.raw_description.pending_activities
            )

        for _ in range(400):
            if await calling():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the agent call never started")
        first.sigkill()
        stack.start_worker("--kind", "agent")
        result = await handle.result()
        history = await handle.fetch_history()
    finally:
        stack.stop()
    assert result.status.value == "COMPLETED"
    assert [s.id for s in result.steps] == ["greet-1"] and result.steps[0].attempt == 1
    assert result.usage.calls == 1  # the killed call recorded nothing
    started = [e.activity_task_started_event_attributes for e in history.events
               if e.HasField("activity_task_started_event_attributes")]  # fmt: skip
    assert started[0].attempt == 2  # the call ran again on the second worker
