"""The agent coordinator job kind's descriptor (seed 002). Light: models only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopfloor.kinds.agents.models import (
    TASK_QUEUE,
    AddInstruction,
    CoordinatorConfig,
    CoordinatorResult,
    CoordinatorState,
    InstructionAdded,
    config_problem,
)
from shopfloor.kinds.agents.settings import AgentSettings
from shopfloor.registry import (
    PROGRESS,
    InputRejected,
    JobKind,
    Presentation,
    Query,
    Signal,
    Update,
    WorkerBundle,
)
from shopfloor.settings import Settings

_WORKFLOWS = "shopfloor.kinds.agents.workflows"


def _input_from_file(path: Path, options: dict[str, Any]) -> CoordinatorConfig:
    """`shopfloor submit agent goal.json -o maxIterations=20`: the seed's config as JSON."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("a goal file holds one JSON object (the seed's workflow config)")
    return CoordinatorConfig.model_validate({**data, **options})


def _check_input(job: CoordinatorConfig, settings: Settings) -> None:
    problem = config_problem(job)
    if problem:
        raise InputRejected(problem)


def goal_outcome(result: dict[str, Any]) -> str:
    """The goal's status decides: COMPLETED passed — unless the spec gave a step up and
    finalized all the same (seed 002's HelloSpec does; a turn refused by the kill switch is
    one), which is `failed`; FAILED failed, TIMED_OUT (its deadline) timed_out, CANCELLED
    (the `cancel` signal or a Temporal cancel) cancelled."""
    status = result.get("status")
    if status == "COMPLETED":
        return "failed" if result.get("reason") else "passed"
    return {"CANCELLED": "cancelled", "TIMED_OUT": "timed_out"}.get(str(status), "failed")


KIND = JobKind(
    name="agent",
    summary="An agent run: a Spec decides, an Agent (mock, Anthropic, gateway) works each "
    "step, the Engine folds replies into state. Pause, resume, cancel, steer while it runs.",
    task_queue=TASK_QUEUE,
    workflow_type="agentCoordinatorWorkflow",
    other_workflow_types=["helloWorkflow", "multiStepWorkflow"],  # seed 002's names
    input_model=CoordinatorConfig,
    outcome=goal_outcome,
    result_model=CoordinatorResult,
    signals=[
        Signal(name="pause", description="no new agent call starts until `resume`"),
        Signal(name="resume", description="go on after `pause`"),
        Signal(
            name="cancel",
            description="the step in flight finishes, artifacts are stored, the goal ends "
            "CANCELLED",
        ),
    ],
    queries=[
        PROGRESS,
        Query(name="state", result=CoordinatorState, description="steps, annotations, usage"),
    ],
    updates=[
        Update(
            name="add_instruction",
            model=AddInstruction,
            result=InstructionAdded,
            description="an instruction every later agent call receives; rejected once the "
            "goal has finished",
        )
    ],
    # Agent calls wait on the network, not the CPU: many fit in one worker.
    max_concurrent_activities=32,
    input_from_file=_input_from_file,
    check_input=_check_input,
    aliases=("agents",),
    bundle=WorkerBundle(
        workflows=[
            f"{_WORKFLOWS}:AgentCoordinatorWorkflow",
            f"{_WORKFLOWS}:HelloWorkflow",
            f"{_WORKFLOWS}:MultiStepWorkflow",
        ],
        run_context="shopfloor.kinds.agents.activities:worker",
        observer="shopfloor.kinds.agents.metrics:AgentMetrics",
    ),
    presentation=Presentation(
        page=Path(__file__).with_name("page.html"),
        live_query="state",
        cancel_button=False,  # the page has its own: the `cancel` signal
        settings=AgentSettings,
    ),
)
