"""The script job kind's descriptor (seed 000)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shopfloor.kinds.scripts import presentation
from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
from shopfloor.kinds.scripts.settings import ScriptSettings
from shopfloor.registry import InputRejected, JobKind, Presentation, WorkerBundle
from shopfloor.settings import Settings


def _input_from_file(path: Path, options: dict[str, Any]) -> ScriptInput:
    return ScriptInput(source=path.read_text(), **options)


def _check_input(job: ScriptInput, settings: Settings) -> None:
    over = settings.over_ceiling(job)
    if over is not None:
        raise InputRejected(over)
    allowlist = settings.of(ScriptSettings).env_allowlist
    disallowed = job.disallowed_env(allowlist)
    if disallowed:
        raise InputRejected(
            f"environment variables {disallowed} are not in this deployment's allow-list "
            f"{allowlist} (SHOPFLOOR_SCRIPT_ENV_ALLOWLIST)"
        )


KIND = JobKind(
    name="script",
    summary="Run a Python script in a sandboxed subprocess; files in out/ become artifacts.",
    task_queue="simulation-task-queue",
    local_first=True,
    workflow_type="ScriptExecutionWorkflow",
    input_model=ScriptInput,
    result_model=ScriptResult,
    input_from_file=_input_from_file,
    outcome=presentation.outcome,
    check_input=_check_input,
    bundle=WorkerBundle(
        workflows=["shopfloor.kinds.scripts.workflows:ScriptExecutionWorkflow"],
        run_context="shopfloor.kinds.scripts.activities:worker",
    ),
    presentation=Presentation(
        page=Path(__file__).with_name("page.html"),
        offload=presentation.offload,
        kill_reason=presentation.kill_reason,
        cli_options=[presentation.ENV_OPTION],
        settings=ScriptSettings,
    ),
)
