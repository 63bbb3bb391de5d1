"""The agent kind's activities: an agent call per step, and artifact storage.

The worker lifespan holds what calls share for the life of the worker: one HTTP pool for the
gateway, one Anthropic client (built on first use), the mock agent's call log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from shopfloor.artifacts import ArtifactError, ArtifactStore
from shopfloor.egress import EgressPolicy
from shopfloor.failures import activity_failure
from shopfloor.heartbeats import heartbeating
from shopfloor.jobs import invalid_input
from shopfloor.killswitch import read_state, refuse_if_on
from shopfloor.kinds.agents.backends import Agent
from shopfloor.kinds.agents.backends.anthropic_agent import AnthropicAgent
from shopfloor.kinds.agents.backends.gateway import GatewayAgent
from shopfloor.kinds.agents.backends.mock import MockAgent
from shopfloor.kinds.agents.models import (
    INLINE_OUTPUT_CHARS,
    AgentReply,
    AgentRequest,
    CoordinatorResult,
    StoreArtifacts,
)
from shopfloor.kinds.agents.stubs import CANCEL_OWN_JOB, RUN_AGENT_STEP, STORE_AGENT_ARTIFACTS
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.settings import Settings


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    async with AgentActivities(ctx.settings, ctx.artifacts) as acts:
        yield acts.activities


class AgentActivities:
    def __init__(self, settings: Settings, artifacts: ArtifactStore) -> None:
        self.settings = settings
        self.artifacts = artifacts
        policy = EgressPolicy.from_settings(settings)
        self.http = policy.client(timeout=httpx.Timeout(600.0, connect=10.0))
        self.mock = MockAgent()
        self.anthropic = AnthropicAgent(settings, policy=policy)
        self.agents: dict[str, Agent] = {
            "mock-agent": self.mock,
            "anthropic-agent": self.anthropic,
            "gateway-agent": GatewayAgent(settings, self.http),
        }

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return [self.run_agent_step, self.store_agent_artifacts, self.cancel_own_job]

    async def __aenter__(self) -> AgentActivities:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.anthropic.aclose()
        await self.http.aclose()

    @activity.defn(name=RUN_AGENT_STEP.name)
    async def run_agent_step(self, request: AgentRequest) -> AgentReply:
        agent = self.agents.get(request.agent_type)
        if agent is None:
            raise invalid_input(f"unknown agentType {request.agent_type!r}: {sorted(self.agents)}")
        # Checked where every turn starts (a paused schedule can still be triggered by hand).
        refuse_if_on(await read_state(activity.client(), self.settings.task_queue_prefix))
        if request.partial_uri:
            request = request.model_copy(
                update={"partial": await asyncio.to_thread(self._read_text, request.partial_uri)}
            )
        # A long LLM call heartbeats so that a dead worker is noticed in seconds, not after
        # the call's whole timeout; the step is then retried on another worker.
        details = {"step": request.step_id, "agent": request.agent_type, "attempt": request.attempt}
        async with heartbeating(details):
            try:
                reply = await agent.step(request)
            except ApplicationError:
                raise  # the agent's own, already in words (final or not, as it chose)
            except Exception as err:
                # Its endpoint may be restarting (gateway down, connection reset, a 5xx):
                # retried. Short and without its causes' stack traces, or the server keeps
                # only "Failure exceeds size limit." of it.
                what = f"{request.agent_type} step {request.step_id}"
                raise activity_failure(what, err) from None
        # A job writes under its own id only (the workflow's, not what the request says).
        own = _own_job_id()
        return await asyncio.to_thread(self._small, own, request, reply)  # the store may be S3

    def _small(self, job_id: str, request: AgentRequest, reply: AgentReply) -> AgentReply:
        """Long outputs go to the artifact store; the history keeps a preview and the URI.
        The name is fixed per step and attempt, so a retried activity overwrites, not adds."""
        if reply.output is None or len(reply.output) <= INLINE_OUTPUT_CHARS:
            return reply
        name = f"{request.goal_id}/steps/{request.step_id}-attempt{request.attempt}.txt"
        uri = self.artifacts.put_bytes(job_id, name, reply.output.encode())
        return reply.model_copy(
            update={"output": reply.output[:INLINE_OUTPUT_CHARS], "output_uri": uri}
        )

    def _read_text(self, uri: str) -> str:
        try:
            return self.artifacts.read_bytes(uri).decode()
        except (ArtifactError, UnicodeDecodeError) as err:
            raise invalid_input(f"cannot read {uri}: {err}") from err

    @activity.defn(name=CANCEL_OWN_JOB.name)
    async def cancel_own_job(self, result: CoordinatorResult) -> CoordinatorResult:
        """Cancels the calling job (only ever its own: the id is the activity's, not an
        argument) and hands its result back, for history to keep."""
        own = _own_job_id()
        try:
            await activity.client().get_workflow_handle(own).cancel()
        except RPCError as err:  # already being cancelled (a Temporal cancel came first)
            activity.logger.info("cancel of %s: %s", own, err)
        return result

    @activity.defn(name=STORE_AGENT_ARTIFACTS.name)
    async def store_agent_artifacts(self, job: StoreArtifacts) -> dict[str, str]:
        """`{goalId}/artifacts/{key}.json` under the job's artifact folder (seed 002's layout)."""

        own = _own_job_id()  # a job writes under its own id only

        def store() -> dict[str, str]:
            return {
                key: self.artifacts.put_bytes(
                    own,
                    f"{job.goal_id}/artifacts/{key}.json",
                    json.dumps(value, indent=2, default=str).encode(),
                )
                for key, value in job.artifacts.items()
            }

        return await asyncio.to_thread(store)  # the store may be S3: off the event loop


def _own_job_id() -> str:
    """The id of the job whose workflow runs this activity."""
    job_id = activity.info().workflow_id
    assert job_id is not None, "a job's activities run in its workflow"
    return job_id
