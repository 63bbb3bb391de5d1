"""A scene cannot forge its own verdict (issue 19: trust boundaries).

Each attack is a simulation job whose scene is honest build123d geometry that FAILs (a box at
rest, its goal 1 m away) plus code that tries to turn the FAIL into a SUCCESS: it writes its
own report.json with "SUCCESS" and leaves with `os._exit(0)`, or writes it and crashes, or
leaves with no geometry at all, or patches the verdict and writes its own video. Submitted
through a real worker and controller beside two innocent simulation jobs (one that SUCCEEDs,
one that FAILs), each attack must end FAIL with a reason that names what the scene did; the
innocents complete with exactly the result `simulate_local` gives for them, with their own
video; the worker stays healthy.

Before the verdict moved to a process of its own (the code at ed7f4e1), the scene's code ran
in the process that judged the run and wrote report.json: run against that code, this test
fails (the first, second and fourth attacks end SUCCESS, the third fails with another reason).
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shopfloor.devserver import DevServer
from tests.containment.test_escapes import _zygote_starts, pytestmark  # noqa: F401
from tests.helpers import Stack

REPO = Path(__file__).resolve().parents[2]
RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()  # SUCCESS: the box lands in the goal
BOX_FAR_FROM_GOAL = textwrap.dedent(  # FAIL: the box rests where it is, 1 m from its goal
    """
    from build123d import Box, Compound, Pos
    box = Pos(0, 0, 20) * Box(40, 40, 40)
    box.label = "box"
    goal = Pos(1000, 0, 40) * Box(200, 200, 80)
    goal.label = "zone_goal_far"
    result = Compound(children=[box, goal])
    """
)
OPTIONS = {"duration_s": 2.0, "width": 160, "height": 120, "stop_on_verdict": False}
# Not what the physics decides: wall-clock timings, and what the cache did.
UNCOMPARED = {"timings_s", "wall_time_s", "physics_wall_s", "realtime_factor", "geometry_cache"}
FORGED_VIDEO = b"\0\0\0\x18ftypmp42 this is not the simulation"

# The attacker finds the run's directory (where run.json is) from wherever it is started.
FIND_RUN_DIR = textwrap.dedent(
    """
    import json, os
    _run = os.getcwd()
    while not os.path.exists(os.path.join(_run, "run.json")) and _run != "/":
        _run = os.path.dirname(_run)
    _forged = {"outcome": "SUCCESS", "reason": "forged by the scene", "metrics": {},
               "artifacts": {}, "warnings": []}
    """
)
ATTACKS = {
    "forge report.json, then os._exit(0)": (
        """
        with open(os.path.join(_run, "report.json"), "w") as f:
            json.dump(_forged, f)
        os._exit(0)
        """,
        "the scene exited (code 0) before handing over its geometry; "
        "the scene wrote report.json: ignored",
    ),
    "forge report.json, then crash": (
        """
        with open(os.path.join(_run, "report.json"), "w") as f:
            json.dump(_forged, f)
        import ctypes
        ctypes.string_at(0)
        """,
        "crash: the scene's process died with SIGSEGV before handing over its geometry; "
        "the scene wrote report.json: ignored",
    ),
    "exit early with no geometry": (
        """
        os._exit(0)
        """,
        "the scene exited (code 0) before handing over its geometry",
    ),
    "patch the verdict, write the video": (
        f"""
        from shopfloor.kinds.simulation import loop, render
        loop.SimulationLoop._verdict = lambda self, *a: ("SUCCESS", "forged by the scene")
        def _close(self):
            self.path.write_bytes({FORGED_VIDEO!r})
            return True
        render.VideoRecorder.close = _close
        os.makedirs(os.path.join(_run, "out"), exist_ok=True)
        with open(os.path.join(_run, "out", "simulation.mp4"), "wb") as f:
            f.write({FORGED_VIDEO!r})
        """,
        "the scene wrote out/simulation.mp4: ignored (a scene hands over only its geometry: "
        "the verdict and the artifacts come from the simulation's own process)",
    ),
}


@pytest.fixture(scope="module")
def stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("forged"))
    s.start_worker("--kind", "simulation")
    s.start_controller()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """What the innocent scenes give in this process, no sandbox, no Temporal."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from shopfloor.kinds.simulation.local import simulate_local

    results = {}
    for name, source in (("success", RAMP_BOX), ("fail", BOX_FAR_FROM_GOAL)):
        out = tmp_path_factory.mktemp(f"expected-{name}")
        result = simulate_local(source, OPTIONS, out_dir=out).model_dump()
        assert result["outcome"] == name.upper(), result["reason"]
        results[name] = result
    return results


def _physics(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if k not in UNCOMPARED}


def _job(source: str, tag: str) -> dict:
    # A tag of its own: every run builds its scene (no geometry cache hit across tests).
    return {"scene": {"kind": "source", "source": f"{source}\n# {tag}\n"}, "options": OPTIONS}


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_a_forged_verdict_is_a_fail_beside_innocent_jobs(
    stack: Stack, expected: dict[str, dict], attack: str, reason: str
) -> None:
    zygotes_before = _zygote_starts(stack)
    tag = f"{time.time_ns()}"
    forger = BOX_FAR_FROM_GOAL + FIND_RUN_DIR + textwrap.dedent(attack)
    jobs = {
        "success": stack.submit("simulation", _job(RAMP_BOX, tag)),
        "fail": stack.submit("simulation", _job(BOX_FAR_FROM_GOAL, tag)),
        "attack": stack.submit("simulation", _job(forger, tag)),
    }
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(jobs, pool.map(stack.result, jobs.values()), strict=True))

    for name in ("success", "fail"):
        got, want = results[name]["result"], expected[name]
        assert (got["outcome"], got["reason"]) == (want["outcome"], want["reason"]), got
        assert _physics(got) == _physics(want)
        assert got["warnings"] == want["warnings"]
        assert set(got["artifact_urls"]) == set(want["artifact_urls"]) >= {"video", "mjcf"}
        video = stack.http.get(f"/artifacts/{jobs[name]}/simulation.mp4")
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert video.content != FORGED_VIDEO and len(video.content) > 1000
        assert results[name]["result"]["video_url"]

    forged = results["attack"]["result"]
    assert forged["outcome"] == "FAIL"
    assert forged["reason"] == reason
    assert forged["video_url"] is None and forged["artifact_urls"] == {}
    for name in ("report.json", "simulation.mp4"):  # nothing the scene wrote was stored
        assert stack.http.get(f"/artifacts/{jobs['attack']}/{name}").status_code == 404

    assert stack.workers[0].alive(), "the worker died"
    assert _zygote_starts(stack) == zygotes_before, "a zygote died and was restarted"
    assert stack.http.get("/healthz").status_code == 200
