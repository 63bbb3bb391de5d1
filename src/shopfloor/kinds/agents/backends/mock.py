"""MockAgent: scripted replies for tests, demos and benchmarks; no network, no key.

agentConfig:
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
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from shopfloor.kinds.agents.models import AgentReply, AgentRequest, ReplyStatus, StepError, Usage


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


def _matches(failure: dict[str, Any], request: AgentRequest) -> bool:
    return (
        failure.get("workKind", request.work_kind) == request.work_kind
        and failure.get("attempt", request.attempt) == request.attempt
    )


class MockAgent:
    def __init__(self) -> None:
        # Every request this process served, in order: tests count and inspect calls.
        self.calls: list[AgentRequest] = []

    async def step(self, request: AgentRequest) -> AgentReply:
        self.calls.append(request)
        config = request.agent_config
        delay_ms = float(config.get("delayMs", 0))
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        for failure in config.get("failures") or []:
            if _matches(failure, request):
                scripted = self._scripted(failure, request)
                if scripted is not None:
                    return scripted
        text = (config.get("responses") or {}).get(request.work_kind)
        if text is None:
            text = config.get("defaultResponse") or _builtin(request)
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
    def _scripted(failure: dict[str, Any], request: AgentRequest) -> AgentReply | None:
        status = str(failure.get("status", "FAIL")).upper()
        message = str(failure.get("message", f"scripted {status}"))
        if "activityAttempts" in failure:
            if activity.info().attempt <= int(failure["activityAttempts"]):
                raise RuntimeError(f"scripted transient failure: {message}")
            return None
        if status == "RAISE":
            raise ApplicationError(message, type="MockAgentError", non_retryable=True)
        reply_status = ReplyStatus(status)
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=reply_status,
            output=str(failure["output"]) if "output" in failure else None,
            error=None
            if reply_status is ReplyStatus.PARTIAL
            else StepError(code=status if status != "FAIL" else "MOCK_FAILURE", message=message),
            retry_after_s=failure.get("retryAfterS"),
            usage=Usage(calls=1),
        )
