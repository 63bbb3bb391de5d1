"""run_simulation: one simulation in a sandboxed child (warm fork by default), heartbeating.

User geometry code never runs in the worker: bad geometry, a broken script, a crash or a
runaway run become a FAIL result with a reason. Only infrastructure failures raise (and are
retried). Artifacts go to the store; the result carries their URIs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio import activity

from shopfloor.artifacts import ArtifactError
from shopfloor.jobs import JOB_PROGRESS, ensure_cancel_was_requested, invalid_input
from shopfloor.kinds.simulation.models import (
    GeometryPart,
    SceneGeometry,
    SceneSource,
    SceneUri,
    SimulationRequest,
    SimulationResult,
)
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.sandbox import Limits, SandboxOutcome, job_environment, run_fresh
from shopfloor.usercode import Zygotes, zygotes

RUNNER = "shopfloor.kinds.simulation.runner:run_in_child"


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    """The kind's worker-side lifespan: its activities, on the worker's shared zygotes."""
    yield [SimulationActivities(ctx, await ctx.shared(zygotes)).run_simulation]


class SimulationActivities:
    def __init__(self, ctx: WorkerContext, zygotes: Zygotes) -> None:
        self.ctx = ctx
        self.zygotes = zygotes

    def _resolve_scene(self, scene: SceneSource | SceneGeometry | SceneUri):
        """Artifact URIs are read here, in the worker, so the child needs no store access."""
        if not isinstance(scene, SceneUri):
            return scene
        try:
            data = self.ctx.artifacts.read_bytes(scene.uri)
        except ArtifactError as err:
            raise invalid_input(str(err)) from err
        fmt = scene.resolved_format
        if fmt == "py":
            return SceneSource(source=data.decode("utf-8", errors="replace"))
        if fmt in ("stl", "step"):
            label = scene.label or Path(scene.uri).stem
            part = GeometryPart(
                label=label,
                format=fmt,  # type: ignore[arg-type]
                data_base64=base64.b64encode(data).decode(),
                fixed=scene.fixed,
            )
            return SceneGeometry(parts=[part])
        raise invalid_input(f"cannot tell the scene format of {scene.uri}: give `format`")

    @activity.defn(name="run_simulation")
    async def run_simulation(self, request: SimulationRequest) -> SimulationResult:
        info = activity.info()
        scene = self._resolve_scene(request.scene)
        workdir = Path(tempfile.mkdtemp(prefix="shopfloor-sim-"))
        try:
            (workdir / "out").mkdir()
            (workdir / "tmp").mkdir()
            arg = {
                "request": {
                    "scene": scene.model_dump(mode="json"),
                    "options": request.options.model_dump(mode="json"),
                },
                "out_dir": str(workdir / "out"),
                "result_path": str(workdir / "result.json"),
            }
            outcome = await self._run(arg, request, workdir)
            if outcome.killed_reason == "cancelled":
                ensure_cancel_was_requested()
            result_file = workdir / "result.json"
            if not result_file.exists():
                return _crashed(outcome, request)
            result = SimulationResult.model_validate_json(result_file.read_text())
            return self._store_artifacts(result, workdir / "out", info.workflow_id)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run(self, arg: dict, request: SimulationRequest, workdir: Path) -> SandboxOutcome:
        limits = Limits(wall_timeout_s=request.timeout_s, memory_mb=request.memory_mb)
        env = job_environment(workdir, {})

        zygote = self.zygotes.warm
        # The warm process chose its GL backend when it imported mujoco; another one needs a
        # fresh interpreter.
        warm_gl = os.environ.get("MUJOCO_GL", "osmesa")
        if zygote is not None and request.options.gl_backend == warm_gl:
            return await zygote.run_call(
                RUNNER, arg, cwd=workdir, env=env, limits=limits, **JOB_PROGRESS
            )
        (workdir / "arg.json").write_text(json.dumps(arg))
        env["MUJOCO_GL"] = request.options.gl_backend
        # A fresh interpreter has no libraries mapped yet: give it room for them.
        limits = Limits(wall_timeout_s=request.timeout_s, memory_mb=request.memory_mb + 4096)
        argv = [sys.executable, "-E", "-s", "-m", "shopfloor.kinds.simulation.runner", "arg.json"]
        return await run_fresh(
            argv, launcher=self.zygotes.cold, cwd=workdir, env=env, limits=limits, **JOB_PROGRESS
        )

    def _store_artifacts(self, result: SimulationResult, out: Path, job_id: str):
        """file:// URIs from the child become artifact:// URIs in the store."""

        def store(url: str | None) -> str | None:
            if not url or not url.startswith("file://"):
                return url
            path = Path(url.removeprefix("file://"))
            if not path.is_file() or out not in path.parents:
                return None
            name = path.relative_to(out).as_posix()
            return self.ctx.artifacts.put_file(job_id, name, path)

        urls = {key: store(url) for key, url in result.artifact_urls.items()}
        return result.model_copy(
            update={
                "artifact_urls": {k: v for k, v in urls.items() if v},
                "video_url": store(result.video_url),
            }
        )


def _crashed(outcome: SandboxOutcome, request: SimulationRequest) -> SimulationResult:
    """The child ended without a verdict: say why, in the words a user can act on."""
    if outcome.killed_reason == "timeout":
        reason = f"timeout: the run exceeded its {request.timeout_s:g}s wall-clock limit"
    elif outcome.killed_reason == "memory":
        reason = f"memory: the run exceeded its {request.memory_mb} MB limit"
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
