"""Entry points of a simulation job's two processes, each a warm fork or a cold interpreter.

The activity never runs user geometry code in the worker itself, and never in the process
that judges the run (activities.py): the scene's process (`build_in_child`) runs the scene's
code and writes its prepared parts to the hand-over file (`SimulationRun.save_geometry`) and a
`BuildReport` to BUILD_FILE; the simulation's own process (`run_in_child`), started once the
scene's is gone, reads only parts the worker has checked (`SimulationRun.geometry`) and
writes its artifacts and a `SimulationReport` (REPORT_FILE) into a directory the scene never
had. Both read a `SimulationRun` from RUN_FILE in their cwd.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shopfloor.kinds.simulation.models import SimulationRun

RUN_FILE = "run.json"
REPORT_FILE = "report.json"
BUILD_FILE = "build.json"
PRE_IMPORTS = ("build123d", "mujoco")  # what a warm zygote has imported: a cold run does too
CAD_MODULES = ("build123d",)  # what a run given cached parts needs not (the light zygote)
BUILD = "--build"  # cold mode's flag for the scene's process


def run_in_child(run_file: str) -> int:
    """Warm mode: called in a fork of the warm zygote, its limits already applied."""
    return _run(_read(run_file))


def build_in_child(run_file: str) -> int:
    """Warm mode, the scene's process: called in a fork of the warm zygote."""
    return _build(_read(run_file))


def _read(run_file: str) -> SimulationRun:
    from shopfloor.kinds.simulation.models import SimulationRun

    return SimulationRun.model_validate_json(Path(run_file).read_text())


def _run(run: SimulationRun) -> int:
    from shopfloor.kinds.simulation.local import simulate
    from shopfloor.sandbox import report_progress

    report = simulate(
        run.scene,
        run.options,
        out=Path(run.out_dir),
        heartbeat=report_progress,
        heartbeat_every_s=run.progress_every_s,
        geometry=Path(run.geometry) if run.geometry else None,
        save_geometry=Path(run.save_geometry) if run.save_geometry else None,
        fixed_parts=run.fixed_parts,
    )
    _write(Path(REPORT_FILE), report.model_dump_json())
    return 0


def _build(run: SimulationRun) -> int:
    from shopfloor.kinds.simulation.local import build
    from shopfloor.kinds.simulation.models import SceneSource
    from shopfloor.sandbox import report_progress

    if run.scene is None or run.save_geometry is None:
        raise ValueError("the scene's process needs a scene and a hand-over file")
    handover, report_file = Path(run.save_geometry).resolve(), Path(BUILD_FILE).resolve()
    if isinstance(run.scene, SceneSource):
        # The scene's code runs in its scratch dir: what it writes there (an export to a
        # relative path, a cache in HOME) is its own business. Anything it leaves beside the
        # hand-over file or in out/ fails the run (activities.py).
        os.chdir("tmp")
        os.environ["HOME"] = os.getcwd()
        os.environ.pop("SHOPFLOOR_OUT", None)
    report = build(run.scene, run.options, handover=handover, heartbeat=report_progress)
    _write(report_file, report.model_dump_json())
    return 0


def _write(path: Path, text: str) -> None:
    # Atomically: a half-written report must not be mistaken for one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    """Cold mode: `python -m shopfloor.kinds.simulation.runner [--build] run.json`, in the
    process's dir (with --build: the scene's process).

    It starts from the same runtime as a warm fork (the GL backend chosen, the libraries
    imported; without build123d when it loads cached parts, as a fork of the light zygote),
    then limits its address space to that + the run's memory_mb, as a warm fork is.
    """
    import importlib

    from shopfloor.kinds.simulation import gl
    from shopfloor.kinds.simulation.models import SimulationRun
    from shopfloor.sandbox import limit_address_space

    building = sys.argv[1] == BUILD
    run = SimulationRun.model_validate_json(Path(sys.argv[-1]).read_text())
    gl.select(run.options.gl_backend)
    # A run given cached parts needs no CAD kernel (as forks of the light zygote have none).
    cad = run.geometry is None
    for module in PRE_IMPORTS if cad else [m for m in PRE_IMPORTS if m not in CAD_MODULES]:
        importlib.import_module(module)
    limit_address_space(run.memory_mb)
    sys.exit(_build(run) if building else _run(run))


if __name__ == "__main__":
    main()
