"""Seed 003's PoetryResearchWorkflow and gateway turns: time skipping over the 2 h wait,
retries with the configured backoff, refusals that fail at once, the kill switch."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from shopfloor.killswitch import switch_off, switch_on
from shopfloor.kinds.phased.kind import KIND as PHASED
from shopfloor.kinds.phased.models import PhasedInput, PhasedResult, PoetryResearchInput
from shopfloor.kinds.phased.settings import GatewaySettings
from shopfloor.kinds.poetry_research.kind import KIND as POETRY
from shopfloor.settings import Settings
from tests.phased.conftest import TOKEN, running


def settings_for(tmp_path: Path, gateway, *, token: str = TOKEN) -> Settings:
    return Settings(
        data_dir=tmp_path,
        egress_allow=[gateway.url.removeprefix("http://")],  # the gateway is on loopback
        task_queue_prefix=f"tq-{uuid.uuid4().hex[:8]}-",
    ).with_kind(GatewaySettings(url=gateway.url, token=token))


async def test_two_hour_wait_under_time_skipping(
    time_skipping_env: WorkflowEnvironment, gateway, tmp_path: Path
) -> None:
    env = time_skipping_env
    settings = settings_for(tmp_path, gateway)
    async with running(env.client, settings, [POETRY]):
        handle = await env.client.start_workflow(
            "PoetryResearchWorkflow",
            id=f"poetry-{uuid.uuid4()}",
            task_queue=settings.task_queue_prefix + "clawfactory",
            result_type=PhasedResult,
        )
        result = await handle.result()
        desc = await handle.describe()
    assert result.status == "COMPLETED"
    assert [s.id for s in result.steps] == ["execute", "settle", "synthesize"]
    assert [t.job_id for t in gateway.turns] == [
        "poetry-research-execute",
        "poetry-research-synthesize",
    ]
    assert result.steps[2].result["text"] == "turn poetry-research-synthesize: ok"
    # Two hours of workflow time passed between the turns, without waiting for them.
    assert desc.close_time - desc.start_time >= timedelta(hours=2)


async def test_turn_is_retried_with_the_configured_backoff(
    env: WorkflowEnvironment, gateway, tmp_path: Path
) -> None:
    gateway.responses["flaky"] = [503, 503]
    settings = settings_for(tmp_path, gateway)
    retry = {"initial": "1s", "maximum": "10s", "backoff": 2.0, "attempts": 3}
    job = PhasedInput.model_validate(
        {
            "definition": {
                "name": "retry",
                "steps": [{"id": "t", "type": "agent_turn", "job_id": "flaky", "retry": retry}],
            }
        }
    )
    async with running(env.client, settings, [PHASED]):
        handle = await env.client.start_workflow(
            "PhasedWorkflow",
            job,
            id=f"phased-{uuid.uuid4()}",
            task_queue=settings.task_queue_prefix + "phased-queue",
            result_type=PhasedResult,
        )
        result = await handle.result()
    assert result.status == "COMPLETED" and result.steps[0].result["attempt"] == 3
    calls = gateway.calls("flaky")
    assert [c.status for c in calls] == [503, 503, 200]
    # Backoff as configured: 1 s, then 2 s (never sooner; a loaded machine may be later).
    assert calls[1].at - calls[0].at >= 1.0
    assert calls[2].at - calls[1].at >= 2.0
    # The history agrees: one activity, scheduled once, started on its third attempt ≥ 3 s later.
    history = await handle.fetch_history()
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    started = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert len(scheduled) == 1 and len(started) == 1
    assert started[0].activity_task_started_event_attributes.attempt == 3
    waited = started[0].event_time.ToDatetime() - scheduled[0].event_time.ToDatetime()
    assert waited >= timedelta(seconds=3)


async def test_a_refused_turn_fails_at_once_with_the_gateways_message(
    env: WorkflowEnvironment, gateway, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, gateway, token="wrong-token")
    async with running(env.client, settings, [POETRY]):
        handle = await env.client.start_workflow(
            "PoetryResearchWorkflow",
            PoetryResearchInput(wait=timedelta(seconds=1)),
            id=f"poetry-{uuid.uuid4()}",
            task_queue=settings.task_queue_prefix + "clawfactory",
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    message = str(failed.value.cause)
    assert "step 'execute' failed" in message and "HTTP 401" in message
    assert "unauthorized" in message
    assert len(gateway.turns) == 1  # a 401 is not retried


async def test_kill_switch_refuses_turns_and_lets_them_run_again(
    env: WorkflowEnvironment, gateway, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, gateway)
    prefix = settings.task_queue_prefix
    await switch_on(env.client, "agent misbehaving", prefix)
    try:
        async with running(env.client, settings, [POETRY]):
            refused = await env.client.start_workflow(
                "PoetryResearchWorkflow",
                PoetryResearchInput(wait=timedelta(seconds=1)),
                id=f"poetry-{uuid.uuid4()}",
                task_queue=prefix + "clawfactory",
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await refused.result()
            assert "kill switch is on" in str(failed.value.cause)
            assert "agent misbehaving" in str(failed.value.cause)
            assert gateway.turns == []  # refused before calling the gateway
            await switch_off(env.client, "fixed", prefix)
            again = await env.client.start_workflow(
                "PoetryResearchWorkflow",
                PoetryResearchInput(wait=timedelta(seconds=1)),
                id=f"poetry-{uuid.uuid4()}",
                task_queue=prefix + "clawfactory",
                result_type=PhasedResult,
            )
            assert (await again.result()).status == "COMPLETED"
    finally:
        await switch_off(env.client, "test over", prefix)
    assert len(gateway.turns) == 2


async def test_large_answers_go_to_the_artifact_store(
    env: WorkflowEnvironment, gateway, tmp_path: Path
) -> None:
    gateway.big_answer_for.add("poetry-research-execute")
    settings = settings_for(tmp_path, gateway)
    async with running(env.client, settings, [POETRY]):
        result = await env.client.execute_workflow(
            "PoetryResearchWorkflow",
            PoetryResearchInput(wait=timedelta(seconds=0.1)),
            id=f"poetry-{uuid.uuid4()}",
            task_queue=settings.task_queue_prefix + "clawfactory",
            result_type=PhasedResult,
        )
    first = result.steps[0].result
    assert first["text_uri"].startswith("artifact://") and len(first["text"]) <= 500
    stored = settings.artifact_root / first["text_uri"].removeprefix("artifact://")
    assert stored.read_text().count("verse") == 10_000
