"""The agent kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.agents.models import AgentReply, AgentRequest, StoreArtifacts

RUN_AGENT_STEP = ActivityStub[AgentRequest, AgentReply]("run_agent_step", AgentRequest, AgentReply)
# Artifact key → its URI.
STORE_AGENT_ARTIFACTS = ActivityStub[StoreArtifacts, dict[str, str]](
    "store_agent_artifacts", StoreArtifacts, dict[str, str]
)
