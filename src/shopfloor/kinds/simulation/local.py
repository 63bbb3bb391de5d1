"""`simulate_local`: the whole pipeline in this process, no Temporal.

Artifacts land in `out_dir` and are returned as file:// URIs; the Temporal activity uploads
them and rewrites the URIs. Bad scripts, geometry or options come back as FAIL, never raise;
exceptions from `heartbeat` (e.g. cancellation) do propagate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shopfloor.kinds.simulation import builder
from shopfloor.kinds.simulation.builder import SceneError
from shopfloor.kinds.simulation.models import SimOptions, SimulationResult
from shopfloor.kinds.simulation.render import VideoRecorder, ensure_gl_backend

log = logging.getLogger(__name__)
Heartbeat = Callable[[dict[str, Any]], None]


class _Run:
    """What a run has produced so far, so a FAIL at any stage still reports it."""

    def __init__(self, out: Path, heartbeat: Heartbeat | None) -> None:
        self.out, self.heartbeat = out, heartbeat
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.artifacts: dict[str, str] = {}
        self.metrics: dict[str, Any] = {}
        self.heartbeat_error: BaseException | None = None

    def beat(self, details: dict[str, Any]) -> None:
        if self.heartbeat:
            try:
                self.heartbeat(details)
            except BaseException as e:
                self.heartbeat_error = e  # so the stage handlers re-raise it, not FAIL on it
                raise

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.beat({"stage": name})
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)

    def write(self, key: str, name: str, data: bytes | str) -> None:
        path = self.out / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.artifacts[key] = path.resolve().as_uri()

    def result(self, outcome: str, reason: str, video: str | None = None) -> SimulationResult:
        return SimulationResult(
            outcome=outcome,
            reason=reason,
            video_url=video,
            metrics={**self.metrics, "timings_s": self.timings},
            artifact_urls=self.artifacts,
            warnings=self.warnings,
        )


def simulate_local(
    scene: Any,
    options: SimOptions | dict[str, Any] | None = None,
    *,
    out_dir: Path | None = None,
    heartbeat: Heartbeat | None = None,
) -> SimulationResult:
    """Simulate `scene` (a SceneInput, build123d source `str`, or a build123d Compound)."""
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="shopfloor-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(out, heartbeat)
    try:
        options = (
            options if isinstance(options, SimOptions) else SimOptions.model_validate(options or {})
        )
    except ValidationError as e:
        return run.result("FAIL", f"invalid options: {e}")
    # Before anything imports mujoco: the GL backend is fixed at import time.
    gl_warning = ensure_gl_backend(options.gl_backend)
    if gl_warning and options.render:
        run.warnings.append(gl_warning)

    stage = "cad"
    try:
        with run.stage("cad"):
            raw, script_fixed, step_shape = builder.load_scene(scene)
        with run.stage(stage := "tessellate"):
            parts = builder.prepare_parts(raw, script_fixed, options, run.warnings)
        with run.stage(stage := "mjcf_load"):
            built = builder.build_mjcf(parts, options, step_shape, run.warnings)
            try:
                model, data = builder.load_model(built)
                rejected = None
            except SceneError as e:  # still export below: a rejected model is worth a look
                rejected = e
        with run.stage(stage := "export"):
            run.write("mjcf", "scene.xml", built.xml)
            for key, name in built.mesh_files.items():
                run.write(key, name, built.assets[name])
            try:
                if builder.export_step(built.step_shape, out / "scene.step"):
                    run.artifacts["step"] = (out / "scene.step").resolve().as_uri()
            except Exception as e:  # the STEP file is a by-product; never fail the run for it
                run.warnings.append(f"STEP export failed: {type(e).__name__}: {e}")
        if rejected is not None:
            raise rejected
    except SceneError as e:
        return run.result("FAIL", str(e))
    except Exception as e:  # OCCT can throw from anywhere inside a bad shape
        if e is run.heartbeat_error or builder.is_cancellation(e):
            raise
        log.warning("simulation %s stage failed", stage, exc_info=True)
        return run.result("FAIL", f"{stage} failed: {type(e).__name__}: {e}")
    return _simulate(run, model, data, built, options)


def _simulate(
    run: _Run, model: Any, data: Any, built: builder.BuiltScene, options: SimOptions
) -> SimulationResult:
    import mujoco

    from shopfloor.kinds.simulation.loop import DEGRADED, SimulationLoop

    recorder = None
    if options.render:
        try:
            recorder = VideoRecorder(
                model, run.out / "simulation.mp4", options.fps, options.width, options.height
            )
        except Exception as e:  # no GL / no ffmpeg: the physics verdict still stands
            run.warnings.append(f"rendering unavailable, no video: {type(e).__name__}: {e}")
    loop = SimulationLoop(
        model,
        data,
        built,
        options,
        on_frame=recorder.capture if recorder else None,
        heartbeat=run.heartbeat,
    )
    try:
        outcome, reason, metrics = loop.run()
    except mujoco.FatalError as e:
        outcome, reason, metrics = "FAIL", f"MuJoCo fatal error: {e}", {}
    finally:
        video_ok = recorder.close() if recorder else False

    run.metrics.update(metrics)
    run.timings["physics"] = metrics.get("physics_wall_s", 0.0)
    video = None
    if recorder:
        run.timings["render"] = round(recorder.render_s, 4)
        run.timings["encode"] = round(recorder.encode_s, 4)
        if video_ok:
            video = recorder.path.resolve().as_uri()
            run.artifacts["video"] = video
        else:
            run.warnings.append(recorder.error or "no video frames were produced")
    for name, count in metrics.get("mujoco_warnings", {}).items():
        if name in DEGRADED:
            run.warnings.append(f"MuJoCo {name} x{count}: {DEGRADED[name]}")
    return run.result(outcome, reason, video)
