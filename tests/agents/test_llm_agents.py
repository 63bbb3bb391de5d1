"""AnthropicAgent through the real `anthropic` client, and GatewayAgent through httpx, against
a local HTTP server: normal reply, 429 with retry-after (a durable timer), 500 then OK, prompt
too long; the key comes from the worker's settings and travels only in the HTTP header."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.agents.models import GoalStatus, StepStatus
from shopfloor.kinds.agents.settings import AgentSettings
from shopfloor.settings import Settings
from tests.agents.fake_llm import FakeLLM
from tests.agents.support import SEED_CONFIG, agent_worker

KEY = "sk-ant-test-" + uuid.uuid4().hex


def settings(fake: FakeLLM) -> Settings:
    own = AgentSettings(
        anthropic_api_key=SecretStr(KEY),
        anthropic_base_url=fake.url,
        anthropic_model="claude-test-model",
        agent_gateway_url=f"{fake.url}/agent/step",
        agent_gateway_token=SecretStr("gw-" + KEY),
    )
    # The fake LLM is on loopback.
    return Settings(egress_allow=[fake.url.removeprefix("http://")]).with_kind(own)


def anthropic_goal(system: str) -> dict:
    return {**SEED_CONFIG, "agentType": "anthropic-agent", "agentConfig": {"system": system}}


async def test_normal_reply_with_usage_and_key_from_settings(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with FakeLLM() as fake:
        async with agent_worker(env.client, tmp_path, settings(fake)) as w:
            handle = await w.start(anthropic_goal("ok"), workflow="helloWorkflow")
            result = await handle.result()
            history = (await handle.fetch_history()).to_json()
    assert result.status is GoalStatus.COMPLETED
    assert result.annotations["greeting"] == "Hello from claude-test-model!"
    assert result.usage.output_tokens == 7 and result.usage.input_tokens > 0
    (request,) = fake.requests
    # The SDK's own auth header (x-api-key in older releases, a bearer token in newer ones).
    headers = request["headers"]
    assert KEY in (
        headers.get("x-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert request["body"]["model"] == "claude-test-model"
    assert "Say hello" in request["body"]["messages"][0]["content"]
    assert KEY not in history


async def test_429_waits_retry_after_on_a_durable_timer(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An hour's retry-after passes in no time under time skipping: it is a workflow timer,
    not a sleep in the worker."""
    env = time_skipping_env
    with FakeLLM(retry_after="3600") as fake:
        async with agent_worker(env.client, tmp_path, settings(fake)) as w:
            handle = await w.start(anthropic_goal(f"429-once:{uuid.uuid4()}"))
            result = await handle.result()
            desc = await handle.describe()
            history = await handle.fetch_history()
    assert result.status is GoalStatus.COMPLETED
    step = result.steps[0]
    assert step.attempt == 2 and step.status is StepStatus.DONE
    assert len(fake.requests) == 2
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) == 1
    assert timers[0].timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() == (
        timedelta(hours=1)
    )
    assert desc.close_time - desc.start_time >= timedelta(hours=1)


async def test_500_is_retried_by_the_activity_then_ok(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with FakeLLM() as fake:
        async with agent_worker(env.client, tmp_path, settings(fake)) as w:
            handle = await w.start(anthropic_goal(f"500-once:{uuid.uuid4()}"))
            result = await handle.result()
            history = await handle.fetch_history()
    assert result.status is GoalStatus.COMPLETED
    assert result.steps[0].attempt == 1  # one engine attempt: the retry was Temporal's
    assert len(fake.requests) == 2
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert started[0].activity_task_started_event_attributes.attempt == 2
    assert (
        "internal error" in started[0].activity_task_started_event_attributes.last_failure.message
    )


async def test_prompt_too_long_is_context_exceeded(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with FakeLLM() as fake:
        async with agent_worker(env.client, tmp_path, settings(fake)) as w:
            result = await w.run(anthropic_goal("too-long"))
    step = result.steps[0]
    assert step.status is StepStatus.BLOCKED and step.error is not None
    assert step.error.code == "CONTEXT_EXCEEDED" and "prompt is too long" in step.error.message
    assert step.attempt == 3  # HelloSpec retried, then gave up as the seed does
    assert len(fake.requests) == 3


async def test_no_key_on_the_worker_is_a_clear_failure(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with agent_worker(env.client, tmp_path, Settings()) as w:
        result = await w.run(anthropic_goal("ok"))
    error = result.steps[0].error
    assert error is not None and "SHOPFLOOR_ANTHROPIC_API_KEY" in error.message


async def test_gateway_agent_rate_limit_then_ok_with_bearer_token(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with FakeLLM() as fake:
        async with agent_worker(env.client, tmp_path, settings(fake)) as w:
            result = await w.run({**SEED_CONFIG, "agentType": "gateway-agent"})
    assert result.status is GoalStatus.COMPLETED
    assert result.annotations["greeting"] == "gateway did greet"
    assert [r["path"] for r in fake.requests] == ["/agent/step", "/agent/step"]
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer gw-{KEY}"
    assert fake.requests[1]["body"]["stepId"] == "greet-1"
    assert result.usage.input_tokens == 3


@pytest.mark.parametrize("agent_type", ["anthropic-agent", "gateway-agent"])
async def test_model_and_gateway_urls_on_loopback_are_refused_unless_allow_listed(
    env: WorkflowEnvironment, tmp_path: Path, agent_type: str
) -> None:
    """The egress policy covers the SDK's own HTTP stack and the gateway agent: a base URL on
    loopback that the worker's allow-list does not name is a clear failure, and nothing
    reaches the server. Before the policy both reached it."""
    with FakeLLM() as fake:
        refusing = settings(fake).model_copy(update={"egress_allow": []})
        async with agent_worker(env.client, tmp_path, refusing) as w:
            result = await w.run({**anthropic_goal("ok"), "agentType": agent_type})
    error = result.steps[0].error  # the seed's spec gives up on the step (as with no key)
    assert error is not None and "egress refused" in error.message
    assert "loopback address" in error.message
    assert fake.requests == []
