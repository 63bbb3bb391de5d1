"""The phased job kind's descriptor (seed 003, generalised): a definition of steps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shopfloor.kinds.phased.models import JobStep, ParallelStep, PhasedInput, PhasedResult
from shopfloor.kinds.phased.references import references_in
from shopfloor.kinds.phased.settings import GatewaySettings
from shopfloor.registry import (
    PROGRESS,
    InputRejected,
    JobKind,
    Presentation,
    WorkerBundle,
    kind_named,
    kinds,
)
from shopfloor.settings import Settings


def load_definition_file(path: Path) -> dict[str, Any]:
    """YAML or JSON (JSON is YAML, but its errors read better as JSON's own)."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path.name} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a mapping with `name` and `steps`")
    return data


def _input_from_file(path: Path, options: dict[str, Any]) -> PhasedInput:
    """`shopfloor submit phased poetry_research.yaml` (a definition file)."""
    return PhasedInput.model_validate({"definition": {**load_definition_file(path), **options}})


def _job_steps(steps: list[Any]) -> list[JobStep]:
    found: list[JobStep] = []
    for step in steps:
        if isinstance(step, ParallelStep):
            found += _job_steps(step.steps)
        elif isinstance(step, JobStep):
            found.append(step)
    return found


def check_job_steps(job: PhasedInput, settings: Settings) -> None:
    """Job steps name kinds this deployment has, with inputs those kinds accept — checked
    at submit, so a typo is a 422 now rather than a failed step hours later."""
    for step in _job_steps(job.definition.steps):
        kind = kind_named(step.kind)
        if kind is None or kind.name == "phased":
            raise InputRejected(
                f"step {step.id!r}: unknown job kind {step.kind!r} "
                f"(one of: {sorted(k for k in kinds() if k != 'phased')})"
            )
        if any(True for _ in references_in(step.input)):
            continue  # checked by the child job itself, once references are resolved
        try:
            child = kind.input_model.model_validate(step.input)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputRejected(
                f"step {step.id!r}: invalid {kind.name} input at {where or 'input'}: {first['msg']}"
            ) from None
        if kind.check_input is not None:
            kind.check_input(child, settings)


def run_outcome(result: dict[str, Any]) -> str:
    """Every step COMPLETED: passed. A failed step fails the job (it ends FAILED naming the
    step), as does a child job that did not pass."""
    return "passed" if result.get("status") == "COMPLETED" else "failed"


# Shared with the poetry-research kind, which runs the same turns.
PAGE = Presentation(
    page=Path(__file__).with_name("page.html"),
    page_context="shopfloor.kinds.phased.page:context",
    settings=GatewaySettings,
)

KIND = JobKind(
    name="phased",
    summary="Run a phased definition: agent turns, durable waits, HTTP calls, child jobs.",
    task_queue="phased-queue",
    workflow_type="PhasedWorkflow",
    input_model=PhasedInput,
    result_model=PhasedResult,
    outcome=run_outcome,
    queries=[PROGRESS],
    input_from_file=_input_from_file,
    check_input=check_job_steps,
    max_concurrent_activities=32,  # turns wait on the network, not the CPU
    bundle=WorkerBundle(
        workflows=["shopfloor.kinds.phased.workflows:PhasedWorkflow"],
        run_context="shopfloor.kinds.phased.activities:worker",
    ),
    presentation=replace(PAGE, page_input=True),  # the timeline shows the definition's steps
)
