"""The simulation pipeline as a plain library: build123d -> MJCF -> MuJoCo -> verdict, video."""

from __future__ import annotations

import base64
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before anything imports mujoco

import build123d as bd  # noqa: E402  (slow import: once per session)
import imageio_ffmpeg  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from shopfloor.kinds.simulation.gl import select as select_gl_backend  # noqa: E402
from shopfloor.kinds.simulation.kind import KIND  # noqa: E402
from shopfloor.kinds.simulation.local import simulate_local  # noqa: E402
from shopfloor.kinds.simulation.models import (  # noqa: E402
    GeometryPart,
    SceneGeometry,
    SceneSource,
    SimOptions,
)

RAMP_BOX = (Path(__file__).parents[2] / "examples" / "ramp_box.py").read_text()
FAST = {"render": False, "duration_s": 3.0}


def ramp_box_with(extra: str) -> str:
    """The reference scene with lines appended (they may rebuild `result`)."""
    return RAMP_BOX + "\n" + extra


def fail(scene: object, tmp_path: Path, **options: object) -> str:
    result = simulate_local(scene, SimOptions(**{**FAST, **options}), out_dir=tmp_path)
    assert result.outcome == "FAIL", result
    return result.reason


def video_frames(path: Path) -> tuple[dict, int]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


# ------------------------------------------------------------------ success and the video


def test_reference_scene_full_run_video(tmp_path: Path) -> None:
    beats: list[dict] = []
    options = SimOptions(duration_s=2.0, fps=30, width=160, height=120, stop_on_verdict=False)
    result = simulate_local(RAMP_BOX, options, out_dir=tmp_path, heartbeat=beats.append)

    assert result.outcome == "SUCCESS", result.reason
    assert "came to rest inside goal zone 'zone_goal_landing'" in result.reason
    m = result.metrics
    assert m["sim_time_s"] == pytest.approx(2.0) and m["stopped_early"] is False
    assert m["steps"] == 1000
    x, y, z = m["final_target_position_m"]
    assert 0.32 < x < 0.54 and abs(y) < 0.08 and 0.0 < z < 0.04  # resting in the goal box
    assert m["max_target_speed_m_s"] > 0.5  # it did slide
    assert m["energy_j"]["final"] < m["energy_j"]["initial"]  # friction dissipates
    assert 0 <= m["max_penetration_m"] < 0.01
    assert set(m["timings_s"]) >= {"cad", "tessellate", "mjcf_load", "physics", "render", "encode"}

    # The MP4 is playable H.264 and lasts exactly as long as the simulated run.
    video = Path(result.video_url.removeprefix("file://"))
    assert result.artifact_urls["video"] == result.video_url and video.stat().st_size > 1000
    meta, n = video_frames(video)
    assert meta["codec"] == "h264" and meta["size"] == (160, 120)
    assert n == m["frames"] == round(2.0 * 30)

    for key in ("mjcf", "step", "mesh:ramp", "mesh:box"):
        assert Path(result.artifact_urls[key].removeprefix("file://")).stat().st_size > 0
    assert "mesh:zone_goal_landing" not in result.artifact_urls  # zones are sites, not meshes
    xml = Path(result.artifact_urls["mjcf"].removeprefix("file://")).read_text()
    assert '<site name="zone_goal_landing"' in xml and 'castshadow="false"' in xml
    assert beats[0] == {"stage": "cad"} and any(b["stage"] == "physics" for b in beats)


def test_reference_scene_stops_on_verdict(tmp_path: Path) -> None:
    options = SimOptions(fps=25, width=64, height=48)  # defaults: 5 s, stop on verdict
    result = simulate_local(SceneSource(source=RAMP_BOX), options, out_dir=tmp_path)

    assert result.outcome == "SUCCESS", result.reason
    t = result.metrics["sim_time_s"]
    assert result.metrics["stopped_early"] and 0.3 < t < 5.0
    _, n = video_frames(Path(result.video_url.removeprefix("file://")))
    assert n == result.metrics["frames"] == math.ceil(t * 25 - 1e-9)  # up to the final state


def test_frame_count_when_fps_and_timestep_do_not_divide(tmp_path: Path) -> None:
    options = SimOptions(
        duration_s=0.5, timestep_s=0.003, fps=7, width=32, height=24, stop_on_verdict=False
    )
    result = simulate_local(RAMP_BOX, options, out_dir=tmp_path)
    sim_time = result.metrics["sim_time_s"]
    assert sim_time == pytest.approx(167 * 0.003)  # whole steps
    _, n = video_frames(Path(result.video_url.removeprefix("file://")))
    assert n == result.metrics["frames"] == round(sim_time * 7) == 4


def test_compound_object_and_stl_geometry(tmp_path: Path) -> None:
    ns: dict = {}
    exec(RAMP_BOX, ns)
    direct = simulate_local(
        ns["result"], SimOptions(**FAST, fixed_labels=["ramp"]), out_dir=tmp_path / "direct"
    )
    assert direct.outcome == "SUCCESS", direct.reason

    def stl(shape: bd.Shape) -> str:
        path = tmp_path / "part.stl"
        bd.export_stl(shape, str(path))
        return base64.b64encode(path.read_bytes()).decode()

    def step(shape: bd.Shape) -> str:
        path = tmp_path / "part.step"
        bd.export_step(bd.Shape.cast(shape.wrapped), str(path))  # no parent: exportable
        return base64.b64encode(path.read_bytes()).decode()

    ramp, box, goal = ns["result"].children
    parts = [
        GeometryPart(label="box", format="stl", data_base64=stl(box)),
        GeometryPart(label="zone_goal_landing", format="stl", data_base64=stl(goal)),
    ]
    meshes = simulate_local(
        SceneGeometry(
            parts=parts
            + [GeometryPart(label="ramp", format="stl", data_base64=stl(ramp), fixed=True)]
        ),
        SimOptions(**FAST),
        out_dir=tmp_path / "stl",
    )
    assert meshes.outcome == "SUCCESS", meshes.reason
    assert "step" not in meshes.artifact_urls  # nothing to export: STL parts have no B-rep

    mixed = simulate_local(
        SceneGeometry(
            parts=parts
            + [GeometryPart(label="ramp", format="step", data_base64=step(ramp), fixed=True)]
        ),
        SimOptions(**FAST),
        out_dir=tmp_path / "mixed",
    )
    assert mixed.outcome == "SUCCESS", mixed.reason
    assert "step" in mixed.artifact_urls


def test_heartbeat_errors_propagate(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def heartbeat(details: dict) -> None:
        if details["stage"] == "tessellate":
            raise Cancelled

    with pytest.raises(Cancelled):
        simulate_local(RAMP_BOX, SimOptions(**FAST), out_dir=tmp_path, heartbeat=heartbeat)


def test_gl_backend_already_bound() -> None:
    import mujoco  # noqa: F401  (bound to MUJOCO_GL=osmesa, set at the top of this module)

    assert select_gl_backend("osmesa") is None
    warning = select_gl_backend("egl")
    assert warning and "bound to the 'osmesa' backend" in warning


def test_non_convex_part_warns(tmp_path: Path) -> None:
    scene = ramp_box_with(
        "wall = Pos(-100, 0, 0) * (Box(40, 200, 200) - Pos(0, 0, 20) * Box(20, 180, 200))\n"
        "wall.label = 'trough'\n"
        "result = Compound(children=[ramp, box, goal, wall])\n"
        "fixed = ['ramp', 'trough']\n"
    )
    result = simulate_local(scene, SimOptions(**FAST), out_dir=tmp_path)
    assert result.outcome == "SUCCESS", result.reason
    assert any("'trough' is far from convex" in w for w in result.warnings), result.warnings


# ------------------------------------------------------------------ failures: scene and geometry


def test_syntax_error(tmp_path: Path) -> None:
    reason = fail("from build123d import *\nresult = Box(1, 1,\n", tmp_path)
    assert reason.startswith("syntax error in scene script at line 2")


def test_occt_error_inside_script(tmp_path: Path) -> None:
    reason = fail("from build123d import *\n\nresult = Box(0, 10, 10)\n", tmp_path)
    assert reason == "scene script raised Standard_DomainError at line 3"


def test_python_error_inside_script(tmp_path: Path) -> None:
    reason = fail(
        "from build123d import *\nb = Box(10, 10, 10)\nresult = fillet(b.edges(), radius=20)\n",
        tmp_path,
    )
    assert reason.startswith("scene script raised ValueError at line 3: Failed creating a fillet")


def test_missing_result(tmp_path: Path) -> None:
    assert "did not assign `result`" in fail("x = 1\n", tmp_path)


def test_zero_volume_part(tmp_path: Path) -> None:
    scene = ramp_box_with(
        "from build123d import Rectangle\n"
        "sheet = Pos(0, 300, 0) * Rectangle(50, 50)\nsheet.label = 'sheet'\n"
        "result = Compound(children=[ramp, box, goal, sheet])\n"
        "fixed = ['ramp', 'sheet']\n"
    )
    assert fail(scene, tmp_path) == (
        "part 'sheet' has zero volume: it is a Rectangle with no solid in it"
    )


def test_flat_stl_mesh(tmp_path: Path) -> None:
    square = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [50, 50, 0]], dtype="<f4")
    tris = square[[[0, 1, 2], [1, 3, 2], [0, 2, 1], [1, 2, 3]]]  # both sides: closed, flat
    rec = np.zeros(4, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tris
    data = bytes(80) + (4).to_bytes(4, "little") + rec.tobytes()
    part = GeometryPart(label="plate", format="stl", data_base64=base64.b64encode(data).decode())
    assert (
        fail(SceneGeometry(parts=[part]), tmp_path)
        == "part 'plate' has zero volume (flat or degenerate geometry)"
    )


def test_mesh_rejected_by_mujoco(tmp_path: Path) -> None:
    # A valid 10 µm cube passes our checks, but MuJoCo's compiler refuses its tiny inertia.
    scene = ramp_box_with(
        "box = Pos(60, 0, 200) * Box(0.01, 0.01, 0.01)\nbox.label = 'speck'\n"
        "result = Compound(children=[ramp, box, goal])\n"
    )
    reason = fail(scene, tmp_path)
    assert reason.startswith(
        "MuJoCo rejected the scene: Error: mass and inertia of moving bodies "
        "must be larger than mjMINVAL Element name 'speck'"
    ), reason
    assert (tmp_path / "scene.xml").exists()  # kept for debugging


def test_several_movable_parts_need_a_target(tmp_path: Path) -> None:
    scene = ramp_box_with(
        "b2 = Pos(0, 300, 20) * Box(40, 40, 40)\nb2.label = 'box2'\n"
        "result = Compound(children=[ramp, box, goal, b2])\n"
    )
    reason = fail(scene, tmp_path)
    assert reason == "several movable parts (box, box2): set options.target_label"


# ------------------------------------------------------------------ failures: physics verdicts


def test_forbidden_zone_touched(tmp_path: Path) -> None:
    pit = (
        "pit = Pos({x}, {y}, 20) * Box(40, 200, 40)\npit.label = 'zone_forbid_pit'\n"
        "result = Compound(children=[ramp, box, goal, pit])\n"
    )
    reason = fail(ramp_box_with(pit.format(x=330, y=0)), tmp_path)
    assert reason.startswith("part 'box' touched forbidden zone 'zone_forbid_pit' at t=")
    # Control: the same zone 5 mm beside the box's path (box half-width 20 + pit 100 + 5).
    beside = simulate_local(
        ramp_box_with(pit.format(x=330, y=125)), SimOptions(**FAST), out_dir=tmp_path / "beside"
    )
    assert beside.outcome == "SUCCESS", beside.reason


def test_fell_off_the_world(tmp_path: Path) -> None:
    reason = fail(RAMP_BOX, tmp_path, floor=False)
    assert reason.startswith("target 'box' fell off the world at t=")


def test_time_limit(tmp_path: Path) -> None:
    scene = ramp_box_with("goal.move(Pos(1000, 0, 0))\n")
    reason = fail(scene, tmp_path, duration_s=1.0)
    assert reason.startswith("time limit: target 'box' did not reach a goal zone within 1.00 s")
    assert "from 'zone_goal_landing'" in reason


def test_numerical_instability(tmp_path: Path) -> None:
    result = simulate_local(
        RAMP_BOX, SimOptions(**FAST, initial_velocity={"box": (0, 0, -1e11)}), out_dir=tmp_path
    )
    assert result.outcome == "FAIL"
    assert re.match(
        r"numerical instability at t=0\.00\d s: MuJoCo reported mjWARN_BADQVEL ", result.reason
    ), result.reason
    assert result.metrics["mujoco_warnings"]["mjWARN_BADQVEL"] >= 1
    assert result.metrics["steps"] <= 5  # caught within one check interval


def test_bad_options() -> None:
    with pytest.raises(ValidationError, match="timestep_s"):
        SimOptions(timestep_s=1.0)
    with pytest.raises(ValidationError, match="must be even"):
        SimOptions(width=321)
    with pytest.raises(ValidationError, match="duration_s"):
        SimOptions(duration_s=1e6)
    with pytest.raises(ValidationError, match="extra"):
        SimOptions(duration=5)


def test_bad_options_dict_is_a_fail(tmp_path: Path) -> None:
    result = simulate_local(RAMP_BOX, {"fps": 0}, out_dir=tmp_path)
    assert result.outcome == "FAIL" and result.reason.startswith("invalid options:")
    assert "fps" in result.reason


# ------------------------------------------------------------------ scenes without objectives


def _stl_of(shape: bd.Shape, path: Path) -> Path:
    bd.export_stl(shape, str(path))
    return path


def test_stl_part_without_objectives_completes_with_metrics(tmp_path: Path) -> None:
    """The README's `shopfloor submit simulation part.stl -o duration_s=3 -o render=false`:
    one loose part, no zones. It drops 10 mm onto the floor and the run reports what it did."""
    stl = _stl_of(bd.Pos(0, 0, 30) * bd.Box(40, 40, 40), tmp_path / "part.stl")
    request = KIND.input_from_file(stl, {"duration_s": 3, "render": False})
    result = simulate_local(request.scene, request.options, out_dir=tmp_path / "out")

    assert result.outcome == "COMPLETED", result.reason
    assert result.reason.startswith("simulated 3.00 s; the scene has no objectives")
    m = result.metrics
    assert m["sim_time_s"] == pytest.approx(3.0) and m["stopped_early"] is False
    assert m["target"] == "part" and m["steps"] == 1500
    x, y, z = m["final_target_position_m"]
    assert abs(x) < 1e-3 and abs(y) < 1e-3 and z == pytest.approx(0.02, abs=1e-3)  # on the floor
    assert m["max_target_speed_m_s"] > 0.2  # it did fall: ~sqrt(2 g 0.01) = 0.44 m/s
    assert m["parts"]["part"]["final_position_m"] == m["final_target_position_m"]
    assert "mjcf" in result.artifact_urls and result.video_url is None


def test_several_parts_without_objectives_need_no_target(tmp_path: Path) -> None:
    scene = (
        "from build123d import *\n"
        "a = Pos(0, 0, 20) * Box(40, 40, 40)\na.label = 'a'\n"
        "b = Pos(100, 0, 60) * Box(40, 40, 40)\nb.label = 'b'\n"
        "result = Compound(children=[a, b])\n"
    )
    result = simulate_local(scene, SimOptions(**FAST), out_dir=tmp_path)
    assert result.outcome == "COMPLETED", result.reason
    assert result.metrics["target"] is None and "final_target_position_m" not in result.metrics
    parts = result.metrics["parts"]
    assert set(parts) == {"a", "b"}
    assert parts["b"]["final_position_m"][2] == pytest.approx(0.02, abs=1e-3)  # b fell 20 mm
    assert parts["b"]["max_speed_m_s"] > 0.2 and parts["a"]["max_speed_m_s"] < 0.05


def test_no_objectives_still_fails_on_instability(tmp_path: Path) -> None:
    scene = "from build123d import *\nresult = {'cube': Pos(0, 0, 20) * Box(40, 40, 40)}\n"
    result = simulate_local(
        scene, SimOptions(**FAST, initial_velocity={"cube": (0, 0, -1e11)}), out_dir=tmp_path
    )
    assert result.outcome == "FAIL" and result.reason.startswith("numerical instability")


# ------------------------------------------------------------------ overlap at the start


def test_parts_overlapping_at_the_start_are_named(tmp_path: Path) -> None:
    scene = (
        "from build123d import *\n"
        "a = Pos(0, 0, 20) * Box(40, 40, 40)\na.label = 'left'\n"
        "b = Pos(35, 0, 20) * Box(40, 40, 40)\nb.label = 'right'\n"  # 5 mm into `left`
        "result = Compound(children=[a, b])\n"
    )
    result = simulate_local(scene, SimOptions(**FAST), out_dir=tmp_path)
    assert result.outcome == "FAIL"
    assert re.match(
        r"parts '(left|right)' and '(left|right)' overlap at the start by 5\.0 mm", result.reason
    ), result.reason
    assert "'left'" in result.reason and "'right'" in result.reason
    assert result.metrics["steps"] == 0  # judged before the first step

    # The same parts touching (not overlapping) run normally.
    apart = scene.replace("Pos(35, 0, 20)", "Pos(40, 0, 20)")
    ok = simulate_local(apart, SimOptions(**FAST), out_dir=tmp_path / "apart")
    assert ok.outcome == "COMPLETED", ok.reason


def test_part_overlapping_a_fixed_part_and_the_floor(tmp_path: Path) -> None:
    into_ramp = ramp_box_with("box.move(Pos(0, 0, -8))\n")  # 8 mm into the slope, vertically
    reason = fail(into_ramp, tmp_path)
    assert re.match(r"parts '(ramp|box)' and '(ramp|box)' overlap at the start by \d", reason)
    assert "'ramp'" in reason and "'box'" in reason

    centred = _stl_of(bd.Box(40, 40, 40), tmp_path / "centred.stl")  # half below z=0
    request = KIND.input_from_file(centred, {"render": False})
    result = simulate_local(request.scene, request.options, out_dir=tmp_path / "stl")
    assert result.outcome == "FAIL"
    assert result.reason.startswith("part 'centred' and the floor overlap at the start by 20.0 mm")


# ------------------------------------------------------------------ forbidden zones: geometry


BALL_AND_ZONE = """
from build123d import *
ball = Pos(-60, 0, 20) * Sphere(20)
ball.label = "ball"
# A zone above and beside the ball's path: its lower edge runs along x at (y, z) = ({y}, {z}).
zone = Pos(50, {y} + 50, {z} + 50) * Box(100, 100, 100)
zone.label = "zone_forbid_shelf"
result = Compound(children=[ball, zone])
"""


def test_forbidden_zone_judged_on_the_geometry_not_the_bounding_box(tmp_path: Path) -> None:
    """A ball (r = 20 mm) rolls under the edge of a zone. With the edge at y = z - 20 = 16 mm
    its bounding box cuts into the zone (by 4 mm in y and z) but the ball stays ~2.6 mm clear
    of it; with the edge at 10 mm the ball itself enters the zone."""
    options = SimOptions(**{**FAST, "duration_s": 0.4}, initial_velocity={"ball": (1.0, 0, 0)})
    clear = simulate_local(BALL_AND_ZONE.format(y=16, z=36), options, out_dir=tmp_path / "clear")
    assert clear.outcome == "SUCCESS", clear.reason
    assert clear.reason == "no part touched a forbidden zone ('zone_forbid_shelf') in 0.40 s"
    x, y, z = clear.metrics["final_target_position_m"]
    assert x > 0.12 and abs(y) < 0.002 and z < 0.021  # it rolled straight past the zone

    into = simulate_local(BALL_AND_ZONE.format(y=10, z=30), options, out_dir=tmp_path / "into")
    assert into.outcome == "FAIL"
    assert into.reason.startswith("part 'ball' touched forbidden zone 'zone_forbid_shelf' at t=")
    t = float(re.search(r"at t=([\d.]+) s", into.reason).group(1))
    # The ball's front reaches the zone's start (x = 0) after ~40 mm of travel, not at once.
    assert 0.02 < t < 0.2, into.reason


def test_forbidden_zone_names_whichever_part_touches_it(tmp_path: Path) -> None:
    scene = (
        "from build123d import *\n"
        "a = Pos(0, 0, 20) * Box(40, 40, 40)\na.label = 'still'\n"
        "b = Pos(0, 200, 20) * Box(40, 40, 40)\nb.label = 'mover'\n"
        "z = Pos(150, 200, 20) * Box(40, 40, 40)\nz.label = 'zone_forbid_pen'\n"
        "result = Compound(children=[a, b, z])\n"
    )
    reason = fail(scene, tmp_path, initial_velocity={"mover": (2.0, 0.0, 0.0)})
    assert reason.startswith("part 'mover' touched forbidden zone 'zone_forbid_pen' at t="), reason
