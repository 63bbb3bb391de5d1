"""The agent kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.agents.models import (
    AgentReply,
    AgentRequest,
    CoordinatorResult,
    StoreArtifacts,
)

RUN_AGENT_STEP = ActivityStub[AgentRequest, AgentReply]("run_agent_step", AgentRequest, AgentReply)
# Artifact key → its URI.
STORE_AGENT_ARTIFACTS = ActivityStub[StoreArtifacts, dict[str, str]](
    "store_agent_artifacts", StoreArtifacts, dict[str, str]
)
# A cancelled goal's end: records its result (a CANCELED job's result is its last activity's)
# and asks Temporal to cancel the calling job, so that a goal ended by the `cancel` signal
# ends CANCELED as every cancelled job does (a workflow cannot request its own cancel).
CANCEL_OWN_JOB = ActivityStub[CoordinatorResult, CoordinatorResult](
    "cancel_own_job", CoordinatorResult, CoordinatorResult
)
