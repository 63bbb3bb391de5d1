"""Agent backends: who does the work of a step (mock, Anthropic, gateway). Worker-side only
(activities import them).

Each agent turns an `AgentRequest` into an `AgentReply` with the whole output text; the
activity then moves long outputs to the artifact store. An agent *returns* what a retry cannot
fix (FAIL, RATE_LIMITED, CONTEXT_EXCEEDED) and *raises* what a retry may fix (5xx, network),
so that Temporal's activity retries handle the latter.
"""

from __future__ import annotations

from typing import Protocol

from shopfloor.kinds.agents.models import AgentReply, AgentRequest


class Agent(Protocol):
    async def step(self, request: AgentRequest) -> AgentReply: ...
