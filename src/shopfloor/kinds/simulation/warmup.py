"""The warm zygote's GL warm-up (see `render`): a short simulation of a reference scene before
the zygote forks, so that every simulation forked from it starts with compiled shaders.

Apart from `render` because it runs a whole simulation (`local.simulate`), which itself
renders through `render`: the warm-up sits above both.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shopfloor.kinds.simulation import render
from shopfloor.kinds.simulation.local import simulate


def warm_up() -> None:
    """In a warm zygote, before it forks: make this process's GL context and render the
    reference scene's kind of frames (floor texture, lights, meshes, transparent zones) a few
    times, so forks inherit compiled shaders. Skipped where the context would not survive a
    fork (threads); a failure only costs the speed-up."""
    from shopfloor.kinds.simulation import gl

    if not gl.fork_safe(os.environ):
        return
    threads = render.native_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="shopfloor-gl-warm-up-") as tmp:
            report = simulate(
                warm_up_scene(),
                {"duration_s": 0.1, "fps": 30, "stop_on_verdict": False},
                out=Path(tmp),
                heartbeat=None,
                heartbeat_every_s=float("inf"),
            )
        if "video" not in report.artifacts:
            print(f"shopfloor: GL warm-up made no video: {report.warnings}", file=sys.stderr)
    except Exception as err:  # noqa: BLE001 - without it runs render as before, only slower
        print(f"shopfloor: GL warm-up failed: {err!r}", file=sys.stderr)
    if render.native_threads() > threads:  # the context started threads, which a fork would lose
        print("shopfloor: GL warm-up left threads behind: forks make their own", file=sys.stderr)
        render.forget_context()


def warm_up_scene() -> Any:
    """What a scene's frames draw — a textured floor, fixed and moving meshes, a transparent
    zone — from STL boxes: no CAD here, since OCCT's thread pool would not survive the fork."""
    import base64

    from shopfloor.kinds.simulation.mjcf import _stl_bytes
    from shopfloor.kinds.simulation.models import SceneGeometry

    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    faces = np.array(
        [[0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
         [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5]]
    )  # fmt: skip

    def box(label: str, lo: tuple[float, ...], size: float, fixed: bool = False) -> dict[str, Any]:
        stl = _stl_bytes(np.asarray(lo) + corners * size, faces)
        data = base64.b64encode(stl).decode()
        return {"label": label, "format": "stl", "data_base64": data, "fixed": fixed}

    return SceneGeometry.model_validate(
        {
            "parts": [
                box("base", (-50, -50, 0), 100, fixed=True),
                box("box", (-10, -10, 110), 20),
                box("zone_goal_top", (-30, -30, 100), 60),
            ]
        }
    )
