"""The agent kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.agents.models import AgentReply, AgentRequest, StoreArtifacts

RUN_AGENT_STEP = ActivityStub[AgentRequest, AgentReply]("run_agent_step", AgentRequest, AgentReply)
# Artifact key → its URI.
STORE_AGENT_ARTIFACTS = ActivityStub[StoreArtifacts, dict[str, str]](
    "store_agent_artifacts", StoreArtifacts, dict[str, str]
)
# Asks Temporal to cancel the calling job (its id): a goal ended by the `cancel` signal then
# ends CANCELED, as every cancelled job does (a workflow cannot request its own cancel).
CANCEL_OWN_JOB = ActivityStub[str, None]("cancel_own_job", str, type(None))
