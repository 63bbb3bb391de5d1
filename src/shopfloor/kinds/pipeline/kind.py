"""The pipeline job kind's descriptor (seed 004)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shopfloor.kinds.pipeline.models import (
    PipelineInput,
    PipelineResult,
    PipelineStatus,
    RestartService,
    ServiceRestarted,
)
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.registry import PROGRESS, JobKind, Presentation, Query, Signal, Update, WorkerBundle


def _input_from_file(path: Path, options: dict[str, Any]) -> PipelineInput:
    # Imported here: YAML parsing is for the command that needs it, not every CLI call.
    from shopfloor.kinds.pipeline.definition import load_definition

    return PipelineInput(definition=load_definition(path), **options)


def pipeline_outcome(result: dict[str, Any]) -> str:
    """A pipeline's job is to run its services until stopped: one that started every
    service and stopped on request (the `stop` signal) passed. One that failed to start ends
    FAILED (rolled back); a Temporal cancel stops its services and ends CANCELED."""
    return "passed" if result.get("phase") == "stopped" else "failed"


KIND = JobKind(
    name="pipeline",
    summary="Start services in dependency order, health-gated; supervise; stop in reverse.",
    task_queue="pipeline-task-queue",
    workflow_type="PipelineWorkflow",
    other_workflow_types=["LogsPipelineWorkflow"],  # seed 004's name
    input_model=PipelineInput,
    result_model=PipelineResult,
    outcome=pipeline_outcome,
    signals=[Signal(name="stop", description="stop every service, in reverse order, and end")],
    queries=[
        PROGRESS,
        Query(
            name="status",
            result=PipelineStatus,
            description="each service: state, pid or container id, health, restarts, since",
        ),
    ],
    updates=[
        Update(
            name="restart_service",
            model=RestartService,
            result=ServiceRestarted,
            description="stop and start one service; answers once it is healthy (or not)",
        )
    ],
    # Probes and health waits are mostly idle: many pipelines share a worker.
    max_concurrent_activities=64,
    input_from_file=_input_from_file,
    bundle=WorkerBundle(
        workflows=[
            "shopfloor.kinds.pipeline.workflows:PipelineWorkflow",
            "shopfloor.kinds.pipeline.workflows:LogsPipelineWorkflow",
        ],
        run_context="shopfloor.kinds.pipeline.activities:worker",
        observer="shopfloor.kinds.pipeline.metrics:PipelineMetrics",
    ),
    presentation=Presentation(
        page=Path(__file__).with_name("page.html"),
        page_context="shopfloor.kinds.pipeline.page:context",
        live_query="status",
        page_input=True,
        cancel_button=False,  # the page has its own: the `stop` signal
        cli="shopfloor.kinds.pipeline.cli:app",
        cli_name="pipeline",
        routes="shopfloor.kinds.pipeline.routes:router",
        settings=PipelineSettings,
    ),
)
