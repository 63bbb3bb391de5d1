"""Simulation as a durable job: the activity under ActivityEnvironment, then end to end
through the controller on a real dev server, including a worker SIGKILLed mid-run."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from temporalio.testing import ActivityEnvironment

from shopfloor.artifacts import LocalArtifactStore
from shopfloor.kinds.simulation.activities import SimulationActivities
from shopfloor.kinds.simulation.models import (
    GeometryPart,
    SceneGeometry,
    SceneSource,
    SimOptions,
    SimulationRequest,
)
from shopfloor.registry import WorkerContext, kind_named
from shopfloor.settings import Settings
from shopfloor.usercode import zygotes
from tests.helpers import Stack, wait_until

EXAMPLES = Path(__file__).parents[2] / "examples"
RAMP_BOX = (EXAMPLES / "ramp_box.py").read_text()
QUICK = {"render": False, "duration_s": 3.0}


@pytest.fixture(scope="module")
async def activities(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator:
    root = tmp_path_factory.mktemp("sim-artifacts")
    served = [kind_named("simulation")]
    settings = Settings(data_dir=root)
    async with WorkerContext(
        settings=settings, artifacts=LocalArtifactStore(root), served=served
    ) as ctx:
        # The worker's own zygotes lifespan: the warm one imports mujoco with its GL backend.
        yield SimulationActivities(ctx, await ctx.shared(zygotes)), root


def request(source: str, **options: object) -> SimulationRequest:
    return SimulationRequest(scene=SceneSource(source=source), options=SimOptions(**options))


async def test_activity_succeeds_with_heartbeats_and_stored_artifacts(activities) -> None:
    acts, root = activities
    env = ActivityEnvironment()
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    # A scene that takes over a second to build, so progress is reported while it runs.
    slow_scene = "import time\ntime.sleep(1.2)\n" + RAMP_BOX
    result = await env.run(
        acts.run_simulation, request(slow_scene, width=160, height=120, duration_s=2.0)
    )
    assert result.outcome == "SUCCESS", result.reason
    assert beats and "elapsed_s" in beats[0][0]
    assert result.video_url and result.video_url.startswith("artifact://")
    assert {"mjcf", "video"} <= set(result.artifact_urls)
    video = LocalArtifactStore(root).path_for(result.video_url)
    assert video.stat().st_size > 1000
    assert "<mujoco" in LocalArtifactStore(root).path_for(result.artifact_urls["mjcf"]).read_text()


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("result = (", "syntax error"),
        ("from build123d import *\nresult = Box(1, 1, 1).fillet(5, [])", "scene script raised"),
        (
            RAMP_BOX.replace("Box(BOX, BOX, BOX)", "Box(BOX, BOX, 0.0)"),
            "",  # a degenerate box: OCCT refuses it or it has zero volume; either is a FAIL
        ),
    ],
)
async def test_bad_geometry_is_a_fail_result_not_an_exception(activities, source, needle) -> None:
    acts, _ = activities
    result = await ActivityEnvironment().run(acts.run_simulation, request(source, **QUICK))
    assert result.outcome == "FAIL"
    assert needle in result.reason and result.reason


async def test_crashing_or_runaway_scene_scripts_are_contained(activities) -> None:
    acts, _ = activities
    env = ActivityEnvironment()
    crashed = await env.run(acts.run_simulation, request("import os\nos._exit(7)", **QUICK))
    assert crashed.outcome == "FAIL" and "exited with code 7" in crashed.reason
    segv = await env.run(acts.run_simulation, request("import ctypes\nctypes.string_at(0)"))
    assert segv.outcome == "FAIL" and "SIGSEGV" in segv.reason
    slow = SimulationRequest(
        scene=SceneSource(source="import time\ntime.sleep(60)"),
        options=SimOptions(**QUICK),
        timeout_s=1,
    )
    timed_out = await env.run(acts.run_simulation, slow)
    assert timed_out.outcome == "FAIL" and timed_out.reason.startswith("timeout")
    # The worker side (this process) and its warm zygote are fine.
    ok = await env.run(acts.run_simulation, request(RAMP_BOX, **QUICK))
    assert ok.outcome == "SUCCESS"


def test_simulation_end_to_end_through_the_controller(stack: Stack, tmp_path: Path) -> None:
    job = {"scene": {"kind": "source", "source": RAMP_BOX}, "options": {"duration_s": 5}}
    res = stack.run("simulation", job)
    result = res["result"]
    assert res["status"] == "COMPLETED" and result["outcome"] == "SUCCESS", result["reason"]
    video = stack.http.get(res["links"][result["video_url"]])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(video.content)
    frames = imageio_ffmpeg.read_frames(str(tmp_path / "v.mp4"))
    meta = next(frames)
    assert meta["size"] == (320, 240)
    assert sum(1 for _ in frames) == result["metrics"]["frames"] > 0
    # Bad input is refused by the controller with a clear message.
    bad = stack.http.post(
        "/jobs/simulation",
        json={"scene": {"kind": "source", "source": "x"}, "options": {"duration_s": 1e9}},
    )
    assert bad.status_code == 422 and "duration_s" in bad.text


def test_geometry_upload_by_uri(stack: Stack) -> None:
    import build123d as bd

    stl = Path(stack.tmp) / "cube.stl"
    bd.export_stl(bd.Pos(0, 0, 20) * bd.Box(40, 40, 40), str(stl))  # resting on the floor
    uri = stack.http.put("/uploads/cube.stl", content=stl.read_bytes()).json()["uri"]
    result = stack.run(
        "simulation", {"scene": {"kind": "uri", "uri": uri}, "options": {"render": False}}
    )["result"]
    # One loose cube and no zones: the upload was read and simulated, with no verdict.
    assert result["outcome"] == "COMPLETED", result["reason"]
    assert result["metrics"]["target"] == "cube" and result["metrics"]["sim_time_s"] > 0


def test_cli_submit_simulation_wait_shows_the_video(stack: Stack) -> None:
    env = {**stack.env, "SHOPFLOOR_CONTROLLER_URL": stack.url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopfloor",
            "submit",
            "simulation",
            str(EXAMPLES / "ramp_box.py"),
            "--wait",
            "-o",
            "duration_s=3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "SUCCESS" in done.stdout and "simulation.mp4" in done.stdout
    as_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopfloor",
            "submit",
            "simulate",  # the alias the CLI also accepts
            str(EXAMPLES / "ramp_box.py"),
            "--wait",
            "--json",
            "-o",
            "render=false",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert json.loads(as_json.stdout)["result"]["video_url"] is None


def test_worker_killed_mid_simulation_completes_on_a_new_worker(fresh_stack: Stack) -> None:
    first = fresh_stack.start_worker()
    fresh_stack.start_controller()
    # The scene script takes a while to build: long enough to kill the worker mid-run.
    slow_scene = "import time\ntime.sleep(6)\n" + RAMP_BOX
    job_id = fresh_stack.submit(
        "simulation", {"scene": {"kind": "source", "source": slow_scene}, "options": QUICK}
    )

    def attempt() -> int:
        progress = fresh_stack.http.get(f"/jobs/{job_id}").json()["progress"]
        return progress[0]["attempt"] if progress and progress[0].get("details") else 0

    wait_until(lambda: attempt() == 1, timeout_s=60, what="simulation running")
    first.sigkill()
    wait_until(lambda: not any(_zygote_of(first.pid)), timeout_s=10, what="zygote gone")
    fresh_stack.start_worker()
    res = fresh_stack.result(job_id, wait_s=180)
    assert res["status"] == "COMPLETED"
    assert res["result"]["outcome"] == "SUCCESS", res["result"]["reason"]


def _zygote_of(worker_pid: int) -> list[int]:
    """Processes still running with the dead worker's zygote command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"zygote_main" in cmd and stat.rsplit(")", 1)[1].split()[1] == str(worker_pid):
            found.append(int(entry.name))
    return found


os.environ.setdefault("MUJOCO_GL", "osmesa")


def _box_stl(lo: tuple[float, float, float], hi: tuple[float, float, float], n: int) -> bytes:
    """A closed box mesh (mm) whose faces are n×n grids: 12·n² triangles of binary STL."""
    lo_, hi_ = np.array(lo, dtype=float), np.array(hi, dtype=float)
    u = np.linspace(0.0, 1.0, n + 1)
    tris = []
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        for side in (0.0, 1.0):
            grid = np.zeros((n + 1, n + 1, 3))
            grid[..., axis] = side
            grid[..., a], grid[..., b] = np.meshgrid(u, u, indexing="ij")
            p = lo_ + grid * (hi_ - lo_)
            quads = (p[:-1, :-1], p[1:, :-1], p[1:, 1:], p[:-1, 1:])
            first = np.stack([quads[0], quads[1], quads[2]], axis=-2).reshape(-1, 3, 3)
            second = np.stack([quads[0], quads[2], quads[3]], axis=-2).reshape(-1, 3, 3)
            faces = np.concatenate([first, second])
            normal = np.cross(faces[:, 1] - faces[:, 0], faces[:, 2] - faces[:, 0])
            outward = (1 if side else -1) * normal[:, axis] > 0
            faces[~outward] = faces[~outward][:, ::-1]  # every face wound outwards
            tris.append(faces)
    all_tris = np.concatenate(tris).astype("<f4")
    rec = np.zeros(len(all_tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = all_tris
    return b"box".ljust(80) + struct.pack("<I", len(rec)) + rec.tobytes()


@pytest.mark.parametrize("gl_backend", ["osmesa", "egl"])  # warm (the worker's) and cold
async def test_big_inline_parts_reach_warm_and_cold_runs(activities, gl_backend) -> None:
    """Parts go to the run as files, not through the zygote's socket (1 MiB a message)."""
    acts, root = activities
    box = _box_stl((-20, -20, 100), (20, 20, 140), n=45)  # 24,300 triangles
    goal = _box_stl((-100, -100, 0), (100, 100, 60), n=1)
    assert len(base64.b64encode(box)) > 1024 * 1024
    parts = [
        GeometryPart(label=label, format="stl", data_base64=base64.b64encode(data).decode())
        for label, data in (("box", box), ("zone_goal_pad", goal))
    ]
    req = SimulationRequest(
        scene=SceneGeometry(parts=parts),
        options=SimOptions(render=False, duration_s=2.0, gl_backend=gl_backend),
    )
    result = await ActivityEnvironment().run(acts.run_simulation, req)
    assert result.outcome == "SUCCESS", result.reason
    assert set(result.artifact_urls) == {"mjcf", "mesh:box"}
    mesh = LocalArtifactStore(root).path_for(result.artifact_urls["mesh:box"])
    assert mesh.name == "box.stl" and mesh.stat().st_size > 1_000_000


async def test_cold_runs_may_add_memory_mb_on_top_of_their_runtime(activities) -> None:
    """memory_mb is what the scene may add to its runtime, whatever the GL backend: the scene
    is built in a fork of the warm zygote (it needs no GL); the simulation's own process then
    runs cold (another GL backend than the warm zygote's), and limits itself after its
    imports as a warm fork is limited."""
    acts, _ = activities

    def allocating(mb: int, memory_mb: int) -> SimulationRequest:
        source = f"buffer = bytearray({mb} * 1024**2)\n" + RAMP_BOX
        return SimulationRequest(
            scene=SceneSource(source=source),
            options=SimOptions(**QUICK, gl_backend="egl"),
            memory_mb=memory_mb,
        )

    env = ActivityEnvironment()
    fits = await env.run(acts.run_simulation, allocating(300, memory_mb=768))
    assert fits.outcome == "SUCCESS", fits.reason
    too_big = await env.run(acts.run_simulation, allocating(1200, memory_mb=768))
    assert too_big.outcome == "FAIL" and "MemoryError" in too_big.reason
