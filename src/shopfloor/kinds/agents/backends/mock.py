"""MockAgent: scripted replies for tests, demos and benchmarks; no network, no key.

agentConfig (`models.MockAgentConfig`):
  defaultResponse  text for work kinds without a scripted response (else a built-in one)
  responses        {workKind: text}
  delayMs          time each call takes (heartbeats keep a long one alive)
  failures         [{workKind?, attempt?, status, message?, retryAfterS?}]: the first match
                   replies with `status` (FAIL, PARTIAL, RATE_LIMITED, CONTEXT_EXCEEDED) instead;
                   status "RAISE" raises an error a retry cannot fix; with `activityAttempts: n`
                   it raises a retryable error on the first n activity attempts.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from shopfloor.kinds.agents.models import (
    AgentReply,
    AgentRequest,
    MockAgentConfig,
    MockFailure,
    ReplyStatus,
    StepError,
    Usage,
)


def _builtin(request: AgentRequest) -> str:
    """Replies that make both specs run end to end with an empty agentConfig."""
    if request.work_kind == "greet":
        return "Hello, world!"
    if request.work_kind == "plan":
        n = int(request.payload.get("maxSteps", 3))
        return "\n".join(
            f"{i}. part {i} of {request.payload.get('task', 'the task')}" for i in range(1, n + 1)
        )
    if request.work_kind == "work":
        return f"done: {request.payload.get('item', request.step_id)}"
    if request.work_kind == "review":
        return "approved"
    return f"{request.work_kind} done"


def _matches(failure: MockFailure, request: AgentRequest) -> bool:
    return failure.work_kind in (None, request.work_kind) and failure.attempt in (
        None,
        request.attempt,
    )


class MockAgent:
    def __init__(self) -> None:
        # Every request this process served, in order: tests count and inspect calls.
        self.calls: list[AgentRequest] = []

    async def step(self, request: AgentRequest) -> AgentReply:
        self.calls.append(request)
        config = MockAgentConfig.model_validate(request.agent_config)
        if config.delay_ms > 0:
            await asyncio.sleep(config.delay_ms / 1000)
        for failure in config.failures:
            if _matches(failure, request):
                scripted = self._scripted(failure, request)
                if scripted is not None:
                    return scripted
        text = config.responses.get(request.work_kind)
        if text is None:
            text = config.default_response or _builtin(request)
        if request.partial:
            text = request.partial + text
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=ReplyStatus.OK,
            output=text,
            usage=Usage(
                input_tokens=len(str(request.payload)) // 4 + 1,
                output_tokens=len(text) // 4 + 1,
                calls=1,
            ),
        )

    @staticmethod
    def _scripted(failure: MockFailure, request: AgentRequest) -> AgentReply | None:
        status = failure.status
        message = failure.message if failure.message is not None else f"scripted {status}"
        if failure.activity_attempts is not None:
            if activity.info().attempt <= failure.activity_attempts:
                raise RuntimeError(f"scripted transient failure: {message}")
            return None
        if status == "RAISE":
            raise ApplicationError(message, type="MockAgentError", non_retryable=True)
        reply_status = ReplyStatus(status)
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=reply_status,
            output=failure.output,
            error=None
            if reply_status is ReplyStatus.PARTIAL
            else StepError(code=status if status != "FAIL" else "MOCK_FAILURE", message=message),
            retry_after_s=failure.retry_after_s,
            usage=Usage(calls=1),
        )
