"""Simulation: warm vs cold, end to end and by stage, on the reference scene.

Prints, measured in the same run on this machine:
  * start of a build123d script: a fresh interpreter (cold) vs a fork of the warm zygote;
    target: warm ≥ 30× faster;
  * the reference scene (3 parts, 5 s simulated, 30 fps, 320×240, rendered) end to end through
    Temporal with a warm worker, vs the same run in a new process (cold); target: warm ≤ 1 s;
    after the first run the worker's geometry cache has its parts (no scene code runs), so it
    is also measured with `geometry_cache: false`: the scene's code runs every time (a fork
    that builds the parts, then the simulation's own process);
  * the split by stage (CAD, tessellate, MJCF load, physics, render, encode) and the real-time
    factor of the physics without rendering;
  * memory: the warm zygote's resident set, and the peak of a cold run.

    python benchmarks/bench_simulation.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

from _common import in_process_worker, machine_summary, print_table, ratio  # noqa: E402
from _report import Figure, print_figures, record  # noqa: E402

from shopfloor.jobs import PROGRESS_EVERY_S  # noqa: E402
from shopfloor.kinds.simulation.models import SimulationRequest, SimulationRun  # noqa: E402
from shopfloor.kinds.simulation.runner import REPORT_FILE, RUN_FILE  # noqa: E402
from shopfloor.sandbox import (  # noqa: E402
    LaunchOptions,
    Limits,
    Zygote,
    job_environment,
    run_process,
)
from shopfloor.usercode import cold_module_argv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()
CAD_SCRIPT = "from build123d import Box\nprint(Box(10, 20, 30).volume)\n"
# The full 5 s scene: no early stop, so 150 frames are rendered and encoded.
REFERENCE_OPTIONS = {
    "duration_s": 5.0,
    "fps": 30,
    "width": 320,
    "height": 240,
    "stop_on_verdict": False,
}
STAGES = ("cad", "tessellate", "mjcf_load", "physics", "render", "encode")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def reference_request(**options: object) -> SimulationRequest:
    return SimulationRequest.model_validate(
        {
            "scene": {"kind": "source", "source": RAMP_BOX},
            "options": {**REFERENCE_OPTIONS, **options},
        }
    )


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def script_start(zygote: Zygote, runs: int) -> tuple[list[float], list[float]]:
    """Wall time of a build123d script: cold interpreter vs warm fork."""
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "s.py").write_text(CAD_SCRIPT)
        env = job_environment(work, {})
        options = LaunchOptions(
            cwd=work, env=env, limits=Limits(wall_timeout_s=120, memory_mb=8192)
        )
        for _ in range(runs):
            t = time.perf_counter()
            out = await run_process([sys.executable, "-E", "-s", "s.py"], options)
            cold.append(time.perf_counter() - t)
            assert out.exit_code == 0, out.stderr
        for _ in range(runs * 4):
            t = time.perf_counter()
            out = await zygote.run_script(work / "s.py", [], options)
            warm.append(time.perf_counter() - t)
            assert out.exit_code == 0, out.stderr
    return cold, warm


async def cold_simulation(runs: int) -> tuple[list[float], float]:
    """The reference scene in a new process each time, as without a warm worker."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "out").mkdir()
        request = reference_request()
        # What the activity writes: one run file, read by the runner (as in a worker's cold run).
        run = SimulationRun(
            scene=request.scene,
            options=request.options,
            memory_mb=request.memory_mb,
            progress_every_s=PROGRESS_EVERY_S,
        )
        (work / RUN_FILE).write_text(run.model_dump_json())
        env = job_environment(work, {})
        for _ in range(runs):
            t = time.perf_counter()
            out = await run_process(
                cold_module_argv("shopfloor.kinds.simulation.runner", RUN_FILE),
                LaunchOptions(
                    cwd=work,
                    env=env,
                    limits=Limits(wall_timeout_s=300, memory_mb=request.memory_mb),
                ),
                sets_own_memory_limit=True,
            )
            times.append(time.perf_counter() - t)
            assert out.exit_code == 0, out.stderr
            assert json.loads((work / REPORT_FILE).read_text())["outcome"] == "SUCCESS"
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return times, peak_mb


async def warm_end_to_end(
    runs: int,
) -> tuple[list[float], list[float], list[dict], float, int]:
    """Through Temporal: start SimulationWorkflow → result, with a warm in-process worker;
    (cached geometry, geometry_cache off, metrics, zygote RSS, frames)."""
    async with in_process_worker("simulation") as w:
        client, queue, result_type = w.client, w.queue, w.kind.result_model
        times, uncached, metrics = [], [], []
        for i in range(2 * runs + 1):  # the first run warms caches and is not counted
            cached = i == 0 or i % 2 == 1  # interleaved: the machine's drift hits both alike
            t = time.perf_counter()
            result = await client.execute_workflow(
                "SimulationWorkflow",
                reference_request() if cached else reference_request(geometry_cache=False),
                id=f"bench-sim-{uuid.uuid4()}",
                task_queue=queue,
                result_type=result_type,
            )
            elapsed = time.perf_counter() - t
            assert result.outcome == "SUCCESS", result.reason
            if i and cached:
                times.append(elapsed)
                metrics.append(result.metrics)
            elif i:
                uncached.append(elapsed)
        no_render = await client.execute_workflow(
            "SimulationWorkflow",
            reference_request(render=False),
            id=f"bench-sim-{uuid.uuid4()}",
            task_queue=queue,
            result_type=result_type,
        )
        zygote_rss = rss_mb(warm_zygote_pid())
        frames = metrics[-1].get("frames", 0) if metrics else 0
        return times, uncached, metrics + [no_render.metrics], zygote_rss, frames


def warm_zygote_pid() -> int | None:
    """The worker's warm zygote: the child of this process that imported build123d."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (
            ppid == os.getpid()
            and b"shopfloor.sandbox.zygote_main" in cmdline
            and b"build123d" in cmdline
        ):
            return int(entry.name)
    return None


async def main(runs: int) -> None:
    print(f"shopfloor simulation benchmark — {machine_summary()}")
    t = time.perf_counter()
    zygote = await Zygote.start(["build123d", "mujoco"])
    zygote_start = time.perf_counter() - t
    try:
        cold_start, warm_start = await script_start(zygote, runs)
    finally:
        await zygote.close()
    cold_sim, cold_peak_mb = await cold_simulation(max(2, runs // 2))
    warm_sim, warm_uncached, metrics, zygote_rss, frames = await warm_end_to_end(runs)
    no_render = metrics.pop()

    print_table(
        ["build123d script start", "median", "runs"],
        [
            ["cold: new interpreter", f"{median(cold_start):.3f} s", str(len(cold_start))],
            [
                "warm: fork of the zygote",
                f"{median(warm_start) * 1000:.1f} ms",
                str(len(warm_start)),
            ],
        ],
        title="Script start (a build123d script that builds one box)",
    )
    print_table(
        ["reference scene (3 parts, 5 s, 30 fps, 320x240)", "median", "runs"],
        [
            ["cold: new process, no Temporal", f"{median(cold_sim):.3f} s", str(len(cold_sim))],
            [
                "warm: worker via Temporal, end to end",
                f"{median(warm_sim):.3f} s",
                str(len(warm_sim)),
            ],
            [
                "warm, geometry_cache off (scene code runs)",
                f"{median(warm_uncached):.3f} s",
                str(len(warm_uncached)),
            ],
        ],
        title="Simulation end to end",
    )
    stage_rows = []
    for stage in STAGES:
        values = [m["timings_s"][stage] for m in metrics if stage in m.get("timings_s", {})]
        stage_rows.append([stage, f"{median(values) * 1000:.1f} ms"])
    print_table(["stage (warm)", "median"], stage_rows, title="Split by stage")
    print(f"\nframes rendered: {frames} (5 s × 30 fps = 150)")
    sim_s = no_render.get("sim_time_s") or 0
    stepping_s = no_render.get("timings_s", {}).get("physics") or float("nan")
    print(
        f"real-time factor without rendering: {no_render.get('realtime_factor', 0):.0f}x for "
        f"the whole loop (stepping + verdict checks); stepping alone {sim_s / stepping_s:.0f}x "
        f"({sim_s} s simulated in {stepping_s * 1000:.1f} ms)"
    )
    print(
        f"zygote start-up (imports build123d + mujoco once): {zygote_start:.2f} s, "
        f"resident {zygote_rss:.0f} MB; cold run peak RSS {cold_peak_mb:.0f} MB"
    )
    print()
    start_ratio = ratio(median(cold_start), median(warm_start))
    sim_ratio = ratio(median(cold_sim), median(warm_sim))
    print(f"warm script start speed-up (cold / warm): {start_ratio:.0f}x  (target >= 30x)")
    print(
        f"warm end-to-end: {median(warm_sim):.3f} s  (target <= 1 s); "
        f"cold / warm ratio: {sim_ratio:.1f}x; with geometry_cache off: "
        f"{median(warm_uncached):.3f} s"
    )
    stages = ", ".join(f"{stage} {row[1]}" for stage, row in zip(STAGES, stage_rows, strict=True))
    figures = [
        Figure(
            "reference simulation, warm, end to end (150 frames, H.264)",
            median(warm_sim),
            "s",
            ("<=", 0.4),
            f"absolute; the same run in a new process without Temporal: {median(cold_sim):.2f} s",
            f"stages (median): {stages}; {frames} frames",
        )
    ]
    print()
    print_figures(figures)
    record(
        "simulation",
        figures,
        details={
            "warm_s": warm_sim,
            "warm_geometry_cache_off_s": warm_uncached,
            "cold_s": cold_sim,
            "frames": frames,
            "warm_script_start_ms": median(warm_start) * 1000,
            "cold_script_start_s": median(cold_start),
            "warm_zygote_rss_mb": zygote_rss,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    asyncio.run(main(parser.parse_args().runs))
