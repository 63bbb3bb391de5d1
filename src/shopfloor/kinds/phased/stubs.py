"""The phased kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.phased.models import (
    AgentTurnRequest,
    AgentTurnResult,
    HttpRequest,
    HttpResponse,
)

AGENT_TURN = ActivityStub[AgentTurnRequest, AgentTurnResult](
    "agent_turn", AgentTurnRequest, AgentTurnResult
)
HTTP_STEP = ActivityStub[HttpRequest, HttpResponse]("http_step", HttpRequest, HttpResponse)
