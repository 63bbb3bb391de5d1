"""The worker's net under every activity (`shopfloor.activity_failures`): an exception too
large to travel whole (a huge message, or an HTTP client's chain of causes and stack traces)
reaches Temporal short, same type, naming the root cause — never "Failure exceeds size
limit."; a small one passes as it was raised."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from shopfloor.activity_failures import FittingFailuresInterceptor
from shopfloor.failures import MAX_ACTIVITY_MESSAGE_CHARS, causes
from tests.helpers import free_port


@activity.defn(name="fails")
async def fails(how: str) -> None:
    if how == "huge message":
        raise RuntimeError("disk full: " + "x" * 3_000_000 + " (while writing out.bin)")
    if how == "closed port":  # httpx's chain: its, httpcore's and anyio's stack traces
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{free_port()}/")
    raise ValueError("small and plain")


@workflow.defn(name="Fails", sandboxed=False)
class Fails:
    @workflow.run
    async def run(self, how: str) -> None:
        await workflow.execute_activity(
            "fails",
            how,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def _failure(env: WorkflowEnvironment, how: str) -> ApplicationError:
    queue = f"fitting-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[Fails],
        activities=[fails],
        interceptors=[FittingFailuresInterceptor()],
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow("Fails", how, id=queue, task_queue=queue)
    chain = causes(failed.value)
    assert not any("exceeds size limit" in str(link) for link in chain), chain
    (raised,) = [link for link in chain if isinstance(link, ApplicationError)]
    return raised


@pytest.mark.parametrize(
    ("how", "type_", "root"),
    [
        ("huge message", "RuntimeError", "(while writing out.bin)"),
        ("closed port", "ConnectError", "All connection attempts failed"),
    ],
)
async def test_a_failure_too_large_travels_short_naming_the_root_cause(
    env: WorkflowEnvironment, how: str, type_: str, root: str
) -> None:
    err = await _failure(env, how)
    assert err.type == type_ and not err.non_retryable
    assert err.message.startswith(f"fails: {type_}: ") and root in err.message, err.message
    assert len(err.message) <= MAX_ACTIVITY_MESSAGE_CHARS
    assert err.cause is None


async def test_a_small_failure_passes_as_it_was_raised(env: WorkflowEnvironment) -> None:
    err = await _failure(env, "small")
    assert err.type == "ValueError" and err.message == "small and plain"
