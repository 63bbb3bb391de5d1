"""Entry point of one simulation run in its own process: a warm fork, or a cold interpreter.

The activity never runs user geometry code in the worker itself: a crash, a runaway loop or
a memory blow-up in the scene script is contained in this child and becomes a FAIL result.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def run_in_child(arg: dict[str, Any]) -> int:
    """Called in the child with {"request": ..., "out_dir": ..., "result_path": ...}."""
    from pydantic import TypeAdapter

    from shopfloor.kinds.simulation.local import simulate_local
    from shopfloor.kinds.simulation.models import SceneInput, SimOptions
    from shopfloor.sandbox import report_progress

    request = arg["request"]
    scene = TypeAdapter(SceneInput).validate_python(request["scene"])
    options = SimOptions.model_validate(request["options"])
    result = simulate_local(scene, options, out_dir=Path(arg["out_dir"]), heartbeat=report_progress)
    # Written atomically: a half-written result must not be mistaken for a verdict.
    tmp = Path(arg["result_path"] + ".tmp")
    tmp.write_text(result.model_dump_json())
    os.replace(tmp, arg["result_path"])
    return 0


def main() -> None:
    """Cold mode: `python -m shopfloor.kinds.simulation.runner ARG.json`."""
    arg = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("MUJOCO_GL", arg["request"]["options"].get("gl_backend", "osmesa"))
    sys.exit(run_in_child(arg))


if __name__ == "__main__":
    main()
