"""run_simulation: one simulation in a sandboxed child (warm fork by default), heartbeating.

User geometry code never runs in the worker: bad geometry, a broken script, a crash or a
runaway run become a FAIL result with a reason. Only infrastructure failures raise (and are
retried). Data goes one way: the request becomes one `SimulationRun` file in the run's
directory (uploaded and inline parts as files beside it), the child writes its artifacts to
`out/` and reports them by name, and `out/` goes to the store; the result carries their URIs.
"""

from __future__ import annotations

import asyncio
import os
import stat
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import ValidationError
from temporalio import activity

from shopfloor.artifacts import ArtifactError
from shopfloor.jobs import PROGRESS_EVERY_S, invalid_input
from shopfloor.kinds.simulation import gl
from shopfloor.kinds.simulation.models import (
    PartFile,
    SceneFiles,
    SceneGeometry,
    SceneSource,
    SceneUri,
    SimulationReport,
    SimulationRequest,
    SimulationResult,
    SimulationRun,
)
from shopfloor.kinds.simulation.runner import REPORT_FILE, RUN_FILE
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.sandbox import Call, Limits, SandboxOutcome
from shopfloor.usercode import UserCodeRun, Zygotes, cold_module_argv, zygotes

RUNNER = "shopfloor.kinds.simulation.runner"
SCENE_DIR = "scene"  # parts given as files, in the run's directory


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    """The kind's worker-side lifespan: its activities, on the worker's shared zygotes."""
    yield [SimulationActivities(ctx, await ctx.shared(zygotes)).run_simulation]


class SimulationActivities:
    def __init__(self, ctx: WorkerContext, zygotes: Zygotes) -> None:
        self.ctx = ctx
        self.zygotes = zygotes

    def _scene_for_run(
        self, scene: SceneSource | SceneGeometry | SceneUri, run_dir: Path
    ) -> SceneSource | SceneFiles:
        """Source as text; parts as files in the run's directory, read by the child. Artifact
        URIs are read here, in the worker, so the child needs no store access."""
        if isinstance(scene, SceneSource):
            return scene
        (run_dir / SCENE_DIR).mkdir()
        if isinstance(scene, SceneGeometry):
            files = []
            for i, part in enumerate(scene.parts):
                path = f"{SCENE_DIR}/part{i}.{part.format}"
                (run_dir / path).write_bytes(part.data())
                files.append(
                    PartFile(label=part.label, format=part.format, path=path, fixed=part.fixed)
                )
            return SceneFiles(parts=files)
        fmt = scene.resolved_format
        if fmt not in ("py", "stl", "step"):
            raise invalid_input(f"cannot tell the scene format of {scene.uri}: give `format`")
        path = f"{SCENE_DIR}/part0.{fmt}"
        try:
            if fmt == "py":
                data = self.ctx.artifacts.read_bytes(scene.uri)
                return SceneSource(source=data.decode(errors="replace"))
            # A copy: the store stays out of the child's reach.
            self.ctx.artifacts.copy_to(scene.uri, run_dir / path)
        except ArtifactError as err:
            raise invalid_input(str(err)) from err
        label = scene.label or Path(scene.uri).stem
        part = PartFile(label=label, format=fmt, path=path, fixed=scene.fixed)  # type: ignore[arg-type]
        return SceneFiles(parts=[part])

    @activity.defn(name="run_simulation")
    async def run_simulation(self, request: SimulationRequest) -> SimulationResult:
        limits = Limits(wall_timeout_s=request.timeout_s, memory_mb=request.memory_mb)
        async with UserCodeRun(self.zygotes, self.ctx.artifacts, limits) as run:
            if run.earlier_result is not None:  # its run finished here; Temporal lost it
                return run.earlier_result
            if not run.adopted:  # an adopted run's dir is prepared, its scene running
                sim_run = SimulationRun(
                    # Reads the store (S3: network): off the event loop.
                    scene=await asyncio.to_thread(self._scene_for_run, request.scene, run.path),
                    options=request.options,
                    out_dir="out",
                    memory_mb=request.memory_mb,
                    progress_every_s=PROGRESS_EVERY_S,
                )
                (run.path / RUN_FILE).write_text(sim_run.model_dump_json())
            # The warm zygote bound its GL backend when it imported mujoco; another backend
            # needs a fresh interpreter.
            warm = request.options.gl_backend == gl.worker_backend()
            outcome = await run.run(
                warm=Call(f"{RUNNER}:run_in_child", RUN_FILE) if warm else None,
                cold=cold_module_argv(RUNNER, RUN_FILE),
            )
            report = (
                _read_report(run.path / REPORT_FILE) if outcome.killed_reason != "disk" else None
            )
            if report is None:
                return run.keep(_crashed(outcome, request))
            collected = await asyncio.to_thread(run.collect_out, outcome)
            result = report.result(collected.uris.get)
            if collected.refused:
                refused = "; ".join(collected.refused_list())
                result.warnings.append(f"artifacts not stored: {refused}")
            return run.keep(result)


def _read_report(path: Path) -> SimulationReport | None:
    """The child's verdict, if it wrote one: a regular file (never followed as a link) that
    parses; anything else is no verdict (the run's own code may have tampered with it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(16 * 1024 * 1024)
    try:
        return SimulationReport.model_validate_json(data)
    except ValidationError:
        return None


def _crashed(outcome: SandboxOutcome, request: SimulationRequest) -> SimulationResult:
    """The child ended without a verdict: say why, in the words a user can act on."""
    if outcome.killed_reason == "timeout":
        reason = f"timeout: the run exceeded its {request.timeout_s:g}s wall-clock limit"
    elif outcome.killed_reason == "memory":
        reason = f"memory: the run exceeded its {request.memory_mb} MB limit"
    elif outcome.killed_reason == "disk":
        reason = "disk: the run exceeded its disk cap; nothing of it was kept"
    elif outcome.killed_reason == "processes":
        reason = "processes: the run exceeded its process limit"
    elif outcome.killed_reason == "cancelled":
        reason = "cancelled"
    elif outcome.signal:
        reason = f"crash: the simulation process died with {outcome.signal}"
    else:
        last = (outcome.stderr.strip().splitlines() or [""])[-1]
        reason = f"crash: the simulation process exited with code {outcome.exit_code}: {last}"
    return SimulationResult(
        outcome="FAIL",
        reason=reason,
        metrics={"wall_time_s": outcome.duration_s},
        warnings=outcome.warnings,
    )
