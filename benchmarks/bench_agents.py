"""Agent-loop overhead per iteration: shopfloor's coordinator vs the seed's design.

Both sides run the same Engine, the same multi-step spec and a zero-delay mock agent, on one
dev server, in this process, on separate task queues:

* seed design (a plain temporalio workflow, as seed 002's TypeScript workflows do it): an
  activity for every decision (`executeSpecDecision`), every agent step (`executeAgentStep`)
  and every fold (`processAgentResponse`), the whole state going in and out of each, and one
  `storeArtifact` activity per artifact at the end;
* shopfloor: decisions and folds in the workflow (pure, deterministic), one activity per agent
  step, all artifacts in one activity.

An iteration is one agent step (decide → call → fold). The sides alternate round by round so
machine noise hits both alike. It measures, it does not assert.

    .venv/bin/python benchmarks/bench_agents.py [--steps 20] [--goals 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from shopfloor.kinds.agents import engine
    from shopfloor.kinds.agents.models import (
        AgentReply,
        AgentRequest,
        CoordinatorConfig,
        EngineState,
        GoalStatus,
        Step,
    )
    from shopfloor.kinds.agents.specs import spec_for

# -- the seed's design: everything an activity ---------------------------------------------------


@activity.defn(name="executeSpecDecision")
async def execute_spec_decision(args: tuple[EngineState, dict]) -> EngineState:
    state, spec_config = args
    for decision in spec_for("multi-step", spec_config).decide(state):
        state = engine.apply_decision(state, decision)
    return state


@activity.defn(name="processAgentResponse")
async def process_agent_response(args: tuple[EngineState, AgentReply]) -> EngineState:
    return engine.apply_reply(*args)


@activity.defn(name="storeArtifact")
async def store_artifact(args: tuple[str, str, object]) -> str:
    return f"artifact://{args[0]}/{args[1]}.json"


@workflow.defn(name="seedDesignMultiStep")
class SeedDesignWorkflow:
    @workflow.run
    async def run(self, config: CoordinatorConfig) -> GoalStatus:
        opts = {"start_to_close_timeout": timedelta(seconds=60)}
        state = engine.new_state(config.goal_id)
        for _ in range(config.max_iterations):
            state = await workflow.execute_activity(
                "executeSpecDecision", (state, config.spec_config), result_type=EngineState, **opts
            )
            if state.status is not GoalStatus.RUNNING:
                break
            for step in engine.runnable_steps(state):
                reply = await workflow.execute_activity(
                    "run_agent_step", _request(config, step), result_type=AgentReply, **opts
                )
                state = await workflow.execute_activity(
                    "processAgentResponse", (state, reply), result_type=EngineState, **opts
                )
        for key, value in state.annotations.items():
            await workflow.execute_activity(
                "storeArtifact", (config.goal_id, key, value), result_type=str, **opts
            )
        return state.status


def _request(config: CoordinatorConfig, step: Step) -> AgentRequest:
    return AgentRequest(
        job_id=workflow.info().workflow_id,
        goal_id=config.goal_id,
        step_id=step.id,
        work_kind=step.work_kind,
        payload=step.payload,
        attempt=step.attempt,
        agent_type=config.agent_type,
    )


# -- the run -------------------------------------------------------------------------------------


async def run_side(
    client: Client, queue: str, workflow_type: str, args: argparse.Namespace
) -> float:
    """Iterations per second over `goals` goals run one after another."""
    config = CoordinatorConfig(
        goal_id="bench",
        spec_type="multi-step",
        spec_config={"maxSteps": args.steps},
        max_iterations=args.steps + 10,
    )
    iterations = 0
    start = time.perf_counter()
    for _ in range(args.goals):
        await client.execute_workflow(
            workflow_type, config, id=f"bench-{uuid.uuid4()}", task_queue=queue
        )
        iterations += args.steps + 2  # plan, the work steps, review
    return iterations / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    from _common import temp_dev_server

    from shopfloor.artifacts import LocalArtifactStore
    from shopfloor.kinds.agents.activities import AgentActivities
    from shopfloor.kinds.agents.workflows import MultiStepWorkflow
    from shopfloor.settings import Settings
    from shopfloor.temporal import connect

    with temp_dev_server() as (server, root):
        client = await connect(Settings(temporal_address=server.address))
        async with AgentActivities(Settings(), LocalArtifactStore(root / "artifacts")) as acts:
            seed_q, ours_q = f"seed-{uuid.uuid4()}", f"ours-{uuid.uuid4()}"
            seed_worker = Worker(
                client,
                task_queue=seed_q,
                workflows=[SeedDesignWorkflow],
                activities=[
                    execute_spec_decision,
                    process_agent_response,
                    store_artifact,
                    acts.run_agent_step,
                ],
            )
            ours_worker = Worker(
                client, task_queue=ours_q, workflows=[MultiStepWorkflow], activities=acts.activities
            )
            async with seed_worker, ours_worker:
                # Warm-up: first runs pay for imports and the workflow sandbox.
                await run_side(client, seed_q, "seedDesignMultiStep", _one(args))
                await run_side(client, ours_q, "multiStepWorkflow", _one(args))
                seed, ours = [], []
                for _ in range(args.rounds):
                    seed.append(await run_side(client, seed_q, "seedDesignMultiStep", args))
                    ours.append(await run_side(client, ours_q, "multiStepWorkflow", args))
    best_seed, best_ours = max(seed), max(ours)
    print(f"agent loop, zero-delay mock, {args.steps + 2} iterations per goal, "
          f"{args.goals} goals x {args.rounds} rounds (best round)")  # fmt: skip
    print(f"  seed design (activity per decision, step, fold): {best_seed:7.1f} iterations/s")
    print(f"  shopfloor (decide and fold in the workflow):     {best_ours:7.1f} iterations/s")
    print(f"  ratio: {best_ours / best_seed:.2f}x  (target >= 2x)")


def _one(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "goals": 1})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="work steps per goal")
    parser.add_argument("--goals", type=int, default=4, help="goals per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
