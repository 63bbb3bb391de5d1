"""Entry point of one simulation run in its own process: a warm fork, or a cold interpreter.

The activity never runs user geometry code in the worker itself: a crash, a runaway loop or
a memory blow-up in the scene script is contained in this child and becomes a FAIL result.
Both modes read the same `SimulationRun` from RUN_FILE in their cwd (the run's directory) and
write a `SimulationReport` to REPORT_FILE next to it (and, when asked, the prepared parts for
the worker's geometry cache: `SimulationRun.save_geometry`).
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
PRE_IMPORTS = ("build123d", "mujoco")  # what a warm zygote has imported: a cold run does too
CAD_MODULES = ("build123d",)  # what a run given cached parts needs not (the light zygote)


def run_in_child(run_file: str) -> int:
    """Warm mode: called in a fork of the warm zygote, its limits already applied."""
    from shopfloor.kinds.simulation.models import SimulationRun

    return _run(SimulationRun.model_validate_json(Path(run_file).read_text()))


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
    )
    # Written atomically: a half-written report must not be mistaken for a verdict.
    tmp = Path(REPORT_FILE + ".tmp")
    tmp.write_text(report.model_dump_json())
    os.replace(tmp, REPORT_FILE)
    return 0


def main() -> None:
    """Cold mode: `python -m shopfloor.kinds.simulation.runner run.json`, in the run's dir.

    It starts from the same runtime as a warm fork (the GL backend chosen, the libraries
    imported; without build123d when it loads cached parts, as a fork of the light zygote),
    then limits its address space to that + the run's memory_mb, as a warm fork is.
    """
    import importlib

    from shopfloor.kinds.simulation import gl
    from shopfloor.kinds.simulation.models import SimulationRun
    from shopfloor.sandbox import limit_address_space

    run = SimulationRun.model_validate_json(Path(sys.argv[1]).read_text())
    gl.select(run.options.gl_backend)
    # A run given cached parts needs no CAD kernel (as forks of the light zygote have none).
    cad = run.geometry is None
    for module in PRE_IMPORTS if cad else [m for m in PRE_IMPORTS if m not in CAD_MODULES]:
        importlib.import_module(module)
    limit_address_space(run.memory_mb)
    sys.exit(_run(run))


if __name__ == "__main__":
    main()
