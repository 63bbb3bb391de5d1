"""The simulation job kind's descriptor. Light on purpose: the controller imports it, and
build123d and mujoco are imported only by workers (once, in the warm zygote)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal

from shopfloor.kinds.simulation import presentation
from shopfloor.kinds.simulation.models import (
    GeometryPart,
    SceneGeometry,
    SceneSource,
    SimOptions,
    SimulationRequest,
    SimulationResult,
)
from shopfloor.registry import InputRejected, JobKind, Presentation, WorkerBundle
from shopfloor.settings import Settings

_REQUEST_FIELDS = {"memory_mb", "timeout_s"}


def _check_input(request: SimulationRequest, settings: Settings) -> None:
    over = settings.over_ceiling(request)
    if over is not None:
        raise InputRejected(over)


def _input_from_file(path: Path, options: dict[str, Any]) -> SimulationRequest:
    """`shopfloor submit simulation scene.py|part.stl|part.step -o duration_s=3 …`"""
    request_fields = {k: options.pop(k) for k in list(options) if k in _REQUEST_FIELDS}
    suffix = path.suffix.lower()
    if suffix == ".py":
        scene: SceneSource | SceneGeometry = SceneSource(source=path.read_text())
    elif suffix in (".stl", ".step", ".stp"):
        fmt: Literal["stl", "step"] = "stl" if suffix == ".stl" else "step"
        fixed = bool(options.pop("fixed", False))
        part = GeometryPart(
            label=path.stem,
            format=fmt,
            data_base64=base64.b64encode(path.read_bytes()).decode(),
            fixed=fixed,
        )
        scene = SceneGeometry(parts=[part])
    else:
        raise ValueError(f"expected a .py build123d scene or an .stl/.step part, got {path.name}")
    return SimulationRequest(scene=scene, options=SimOptions(**options), **request_fields)


# `module:function` is called once imported: the GL context forks inherit (render.py).
RUN_MODULES = (
    "shopfloor.kinds.simulation.local",
    "shopfloor.kinds.simulation.loop",
    "shopfloor.kinds.simulation.warmup:warm_up",
)

KIND = JobKind(
    name="simulation",
    summary="Simulate a build123d scene in MuJoCo: verdict, metrics, MP4 video, artifacts.",
    task_queue="simulation-task-queue",
    local_first=True,
    workflow_type="SimulationWorkflow",
    input_model=SimulationRequest,
    result_model=SimulationResult,
    input_from_file=_input_from_file,
    outcome=presentation.outcome,
    check_input=_check_input,
    # The libraries and the run's own pipeline: a fork then imports nothing (pydantic models
    # and the pipeline's modules cost ~100 ms a run when each fork imports them again).
    warm_imports=("build123d", "mujoco", "imageio_ffmpeg", *RUN_MODULES),
    warm_environment="shopfloor.kinds.simulation.gl:warm_environment",
    aliases=("simulate",),
    bundle=WorkerBundle(
        workflows=["shopfloor.kinds.simulation.workflows:SimulationWorkflow"],
        run_context="shopfloor.kinds.simulation.activities:worker",
    ),
    presentation=Presentation(
        page=Path(__file__).with_name("page.html"),
        page_context="shopfloor.kinds.simulation.page:context",
        offload=presentation.offload,
        kill_reason=presentation.kill_reason,
    ),
)
