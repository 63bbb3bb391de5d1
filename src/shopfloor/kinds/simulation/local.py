"""The whole pipeline in this process: `simulate` (what a job's run process calls) and
`simulate_local` (the same, for use without Temporal).

Artifacts land in the out dir: `simulate` reports them by name relative to it (the job's
activity stores the directory and names the URIs), `simulate_local` as file:// URIs a user can
open. Bad scripts, geometry or options come back as FAIL, never raise; exceptions from
`heartbeat` (e.g. cancellation) do propagate.

A job's run is two processes (see activities.py): the scene's, which runs `build` (the scene's
code, CAD, tessellation and the STEP export → prepared parts in a hand-over file, nothing
else), and the simulation's own, which runs `simulate` with those parts checked (`geometry`):
it runs no scene code, no CAD and no tessellation, re-derives from the meshes what decides
the verdict (`meshes.trusted_parts`) and goes on from the MJCF, with the same warnings and
the same STEP file as a run that built them in-process. `simulate` of a scene, in one
process, is `simulate_local`'s (and may write what it prepared: `save_geometry`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shopfloor.kinds.simulation import gl, meshes, mjcf, scene
from shopfloor.kinds.simulation.models import (
    BuildReport,
    BuildStage,
    Outcome,
    SimOptions,
    SimulationReport,
    SimulationResult,
)
from shopfloor.kinds.simulation.render import VideoRecorder
from shopfloor.kinds.simulation.scene import SceneError, is_cancellation

log = logging.getLogger(__name__)
Heartbeat = Callable[[dict[str, Any]], None]


class _Run:
    """What a run has produced so far, so a FAIL at any stage still reports it."""

    def __init__(self, out: Path, heartbeat: Heartbeat | None) -> None:
        self.out, self.heartbeat = out, heartbeat
        self.current = ""  # the stage under way (or the last one)
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
        self.current = name
        self.beat({"stage": name})
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)

    def write(self, key: str, name: str, data: bytes | str) -> None:
        (self.out / name).write_bytes(data.encode() if isinstance(data, str) else data)
        self.artifacts[key] = name

    def report(self, outcome: Outcome, reason: str) -> SimulationReport:
        return SimulationReport(
            outcome=outcome,
            reason=reason,
            metrics={**self.metrics, "timings_s": self.timings},
            artifacts=self.artifacts,
            warnings=self.warnings,
        )


def simulate_local(
    scene: Any,
    options: SimOptions | dict[str, Any] | None = None,
    *,
    out_dir: Path | None = None,
    heartbeat: Heartbeat | None = None,
    heartbeat_every_s: float = 2.0,
) -> SimulationResult:
    """Simulate `scene` (a SceneInput, build123d source `str`, or a build123d Compound);
    artifacts are file:// URIs of files in `out_dir` (default: a new temp dir). `heartbeat`,
    if given, gets each stage as it starts and the physics progress every
    `heartbeat_every_s`."""
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="shopfloor-sim-"))
    report = simulate(
        scene, options, out=out, heartbeat=heartbeat, heartbeat_every_s=heartbeat_every_s
    )
    return report.result(lambda name: (out / name).resolve().as_uri())


def simulate(
    scene: Any,
    options: SimOptions | dict[str, Any] | None,
    *,
    out: Path,
    heartbeat: Heartbeat | None,
    heartbeat_every_s: float,
    geometry: Path | None = None,
    save_geometry: Path | None = None,
    fixed_parts: Collection[str] = (),
) -> SimulationReport:
    """`simulate_local`, reporting the artifacts by their names relative to `out`. With
    `geometry` (a `meshes.dump_prepared` file) the scene's prepared parts are loaded from it,
    checked as parts a scene's code wrote (`meshes.trusted_parts`, `fixed_parts` held fixed),
    and `scene` is not run; with `save_geometry` the parts the scene prepared are written
    there once the run has got through the export (never under `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(out, heartbeat)
    try:
        options = (
            options if isinstance(options, SimOptions) else SimOptions.model_validate(options or {})
        )
    except ValidationError as e:
        return run.report("FAIL", f"invalid options: {e}")
    # Before anything imports mujoco: the GL backend is fixed at import time.
    gl_warning = gl.select(options.gl_backend)
    if gl_warning and options.render:
        run.warnings.append(gl_warning)
    try:
        model, data, built = _build(run, scene, options, geometry, save_geometry, fixed_parts)
    except _Failed as failed:
        return run.report("FAIL", failed.reason)
    return _simulate(run, model, data, built, options, heartbeat_every_s)


def build(
    scene: Any, options: SimOptions, *, handover: Path, heartbeat: Heartbeat | None
) -> BuildReport:
    """The scene's side of a job's run: its code (or its part files) → prepared parts with
    their STEP export, written to `handover` for the simulation's own process; nothing else.
    Returns what the worker is told: a FAIL reason, or the timings and the warnings the
    hand-over file does not carry."""
    run = _Run(handover.parent, heartbeat)
    carried = 0  # warnings the hand-over file carries
    try:
        with _failing(run):
            parts, warnings, step_shape = _prepare(run, scene, options)
            carried = len(run.warnings)
            with run.stage("export"):
                step = _step_bytes(run, step_shape)
                meshes.dump_prepared(meshes.Prepared(parts, _bounded(warnings), step), handover)
    except _Failed as failed:
        return BuildReport(
            fail=failed.reason[:20_000],
            timings_s=_build_timings(run.timings),
            warnings=_bounded(run.warnings),
        )
    return BuildReport(
        timings_s=_build_timings(run.timings), warnings=_bounded(run.warnings[carried:])
    )


def _build_timings(timings: dict[str, float]) -> dict[BuildStage, float]:
    """The timings of `build`'s stages (the only ones it runs), in the order they run."""
    stages: tuple[BuildStage, ...] = ("cad", "tessellate", "export")
    return {stage: timings[stage] for stage in stages if stage in timings}


def _bounded(warnings: list[str]) -> list[str]:
    """Within what the hand-over file and the build report may carry."""
    kept = [w[: meshes.MAX_WARNING_CHARS] for w in warnings[: meshes.MAX_WARNINGS - 1]]
    if len(warnings) > len(kept):
        kept.append(f"... and {len(warnings) - len(kept)} more warnings")
    return kept


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


@contextmanager
def _failing(run: _Run) -> Iterator[None]:
    """What a user's scene, parts or options can break becomes `_Failed` with the reason."""
    try:
        yield
    except SceneError as e:
        raise _Failed(str(e)) from None
    except Exception as e:  # OCCT can throw from anywhere inside a bad shape
        if e is run.heartbeat_error or is_cancellation(e):
            raise
        log.warning("simulation %s stage failed", run.current, exc_info=True)
        raise _Failed(f"{run.current} failed: {type(e).__name__}: {e}") from None


def _prepare(
    run: _Run, source: Any, options: SimOptions
) -> tuple[list[meshes.Part], list[str], Any]:
    """Scene → (prepared parts, the warnings preparing them gave, the shape to export as
    STEP). Runs the scene's code, if it has any."""
    with run.stage("cad"):
        raw, script_fixed, step_shape = scene.load_scene(source)
    with run.stage("tessellate"):
        first_warning = len(run.warnings)
        parts = meshes.prepare_parts(raw, script_fixed, options, run.warnings)
    return parts, run.warnings[first_warning:], step_shape


def _build(
    run: _Run,
    source: Any,
    options: SimOptions,
    geometry: Path | None = None,
    save_geometry: Path | None = None,
    fixed_parts: Collection[str] = (),
) -> tuple[Any, Any, mjcf.BuiltScene]:
    """Scene (or prepared parts) → parts → MJCF → MuJoCo model, exported to the out dir;
    raises _Failed."""
    run.current = "cad"
    cached: meshes.Prepared | None = None
    with _failing(run):
        if geometry is not None:
            with run.stage("geometry"):
                cached = _load_prepared(geometry)
                parts = meshes.trusted_parts(cached, options, set(fixed_parts))
            step_shape = None
            run.warnings += cached.warnings
        else:
            parts, prepare_warnings, step_shape = _prepare(run, source, options)
        with run.stage("mjcf_load"):
            built = mjcf.build_mjcf(parts, options, step_shape, run.warnings)
            try:
                model, data = mjcf.load_model(built)
                rejected = None
            except SceneError as e:  # still export below: a rejected model is worth a look
                rejected = e
        with run.stage("export"):
            exported = _export(run, built, cached.step if cached is not None else None)
            if save_geometry is not None and cached is None and exported is not False:
                # Read back only for the cache: a run that saves nothing pays no extra I/O.
                step = (run.out / "scene.step").read_bytes() if exported else None
                _save(save_geometry, meshes.Prepared(parts, prepare_warnings, step))
        if rejected is not None:
            raise rejected
    return model, data, built


def _load_prepared(path: Path) -> meshes.Prepared:
    """The prepared parts at `path`, every byte checked (`meshes.load_prepared`)."""
    with open(path, "rb") as f:
        data = f.read(meshes.MAX_PREPARED_BYTES + 1)
    try:
        return meshes.load_prepared(data)
    except meshes.BadPrepared as e:
        raise SceneError(f"the prepared geometry was refused: {e}") from None


def _step_bytes(run: _Run, shape: Any) -> bytes | None:
    """The STEP export of `shape` (None: nothing to export, or its export failed, which is a
    warning: the STEP file is a by-product)."""
    if shape is None:
        return None
    with tempfile.TemporaryDirectory(prefix="step-") as tmp:  # in the run's own TMPDIR
        path = Path(tmp) / "scene.step"
        try:
            return path.read_bytes() if scene.export_step(shape, path) else None
        except Exception as e:
            run.warnings.append(f"STEP export failed: {type(e).__name__}: {e}")
            return None


def _export(run: _Run, built: mjcf.BuiltScene, step: bytes | None) -> bool | None:
    """Writes the artifacts; `step`: the STEP file a cached scene exported before. Returns
    whether scene.step was written: None when there was no STEP shape, False when its export
    failed."""
    run.write("mjcf", "scene.xml", built.xml)
    for key, name in built.mesh_files.items():
        run.write(key, name, built.assets[name])
    if step is not None:
        run.write("step", "scene.step", step)
        return True
    try:
        if scene.export_step(built.step_shape, run.out / "scene.step"):
            run.artifacts["step"] = "scene.step"
            return True
        return None
    except Exception as e:  # the STEP file is a by-product; never fail the run for it
        run.warnings.append(f"STEP export failed: {type(e).__name__}: {e}")
        return False


def _save(path: Path, prepared: meshes.Prepared) -> None:
    """What this run prepared, for the worker's geometry cache: a file the worker checks
    before it keeps it. Failing to write it costs only the next run's speed-up."""
    try:
        meshes.dump_prepared(prepared, path)
    except Exception:
        log.warning("could not write the prepared geometry to %s", path, exc_info=True)


def _simulate(
    run: _Run,
    model: Any,
    data: Any,
    built: mjcf.BuiltScene,
    options: SimOptions,
    heartbeat_every_s: float,
) -> SimulationReport:
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
        heartbeat_every_s=heartbeat_every_s,
    )
    try:
        outcome, reason, metrics = loop.run()
    except mujoco.FatalError as e:
        outcome, reason, metrics = "FAIL", f"MuJoCo fatal error: {e}", {}
    finally:
        video_ok = recorder.close() if recorder else False

    run.metrics.update(metrics)
    run.timings["physics"] = metrics.get("physics_wall_s", 0.0)
    if recorder:
        run.timings["render"] = round(recorder.render_s, 4)
        run.timings["encode"] = round(recorder.encode_s, 4)
        if video_ok:
            run.artifacts["video"] = recorder.path.relative_to(run.out).as_posix()
        else:
            run.warnings.append(recorder.error or "no video frames were produced")
    for name, count in metrics.get("mujoco_warnings", {}).items():
        if name in DEGRADED:
            run.warnings.append(f"MuJoCo {name} x{count}: {DEGRADED[name]}")
    return run.report(outcome, reason)
