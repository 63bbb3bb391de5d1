"""Simulation sweep: many variants of one scene, without video, submitted together to one worker.

The reference scene (`examples/ramp_box.py`) with options {"render": false, "seed": i,
"spawn_jitter_mm": 5} for i in 0..N-1, all started at once on one in-process worker for the
simulation kind (built as `shopfloor worker` builds it); the worker runs as many at a time as
it has activity slots. Measured, per sweep:

  * wall time from the first start to the last result → simulations/s (goal ≥ 25);
  * CPU per variant: this process (worker + client), its children (the zygotes and the runs
    they forked and reaped) and the dev server;
  * the median stage timings the runs report (`metrics.timings_s`), and how many hit the
    worker's geometry cache.

It checks what a sweep must show: every variant ends SUCCESS (the box lands in the goal zone)
or FAIL because its jittered start sinks the box into the slope (parts overlapping at t=0: a
start jittered up the ramp), and the jitter is real: the final positions differ across seeds.
With both sweeps it also checks that each variant's outcome, reason, warnings and metrics are
the same with and without the cache.

The warm-up runs uncached variants, then cached runs of another source (another cache key),
which bring up the worker's light zygote (cached runs fork from it) as on a worker that served
cached runs lately; `--fresh-light` skips that, so it starts mid-sweep.

    python benchmarks/bench_sweep.py                 # both: without the cache, then with it
    python benchmarks/bench_sweep.py --no-cache      # only without (every variant builds)
    python benchmarks/bench_sweep.py --variants 200  # steadier numbers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

from _common import (  # noqa: E402
    AllThreadsProfile,
    CpuTimes,
    in_process_worker,
    machine_summary,
    print_table,
)
from _report import Figure, print_figures, record  # noqa: E402

from shopfloor.kinds.simulation.models import SimulationRequest, SimulationResult  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()
STAGES = ("cad", "tessellate", "geometry", "mjcf_load", "export", "physics")
GOAL = 25.0
JITTER_MM = 5


class CpuProfile(AllThreadsProfile):
    """AllThreadsProfile timed by each thread's CPU clock: on a machine whose cores are all
    busy, wall-clock times mostly measure waiting for a core."""

    def _start_in_this_thread(self, *_: object) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()


def jitter(seed: int) -> np.ndarray:
    """The start offset (mm, x and y) that seed gives the box (as mjcf._target_start does)."""
    return np.random.default_rng(seed).uniform(-JITTER_MM, JITTER_MM, 2)


def variant(seed: int, *, cache: bool, source: str = RAMP_BOX) -> SimulationRequest:
    options: dict[str, object] = {"render": False, "seed": seed, "spawn_jitter_mm": JITTER_MM}
    if not cache:
        options["geometry_cache"] = False
    return SimulationRequest.model_validate(
        {"scene": {"kind": "source", "source": source}, "options": options}
    )


async def run_one(client, queue: str, request: SimulationRequest) -> SimulationResult:
    result = await client.execute_workflow(
        "SimulationWorkflow",
        request,
        id=f"bench-sweep-warm-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=SimulationResult,
    )
    if result.outcome not in ("SUCCESS", "FAIL"):
        raise RuntimeError(f"warm-up run: {result}")
    return result


@dataclass
class Sweep:
    label: str
    results: list[SimulationResult]
    wall_s: float
    cpu: CpuTimes

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def rate(self) -> float:
        return self.n / self.wall_s

    def stage_ms(self, stage: str) -> float:
        values = [r.metrics.get("timings_s", {}).get(stage) for r in self.results]
        values = [v for v in values if v is not None]
        return statistics.median(values) * 1000 if values else float("nan")

    def cache_hits(self) -> int:
        return sum(1 for r in self.results if r.metrics.get("geometry_cache") == "hit")

    def check(self) -> list[str]:
        """What is wrong with this sweep's results (empty: nothing).

        Every variant must either succeed (the box slides into the goal zone) or fail because
        its jittered start pushes the box into the slope (a start jittered up the ramp, -x,
        sinks it into the ramp's face by more than the overlap tolerance): a verdict the
        physics explains, not a broken run."""
        problems = []
        for seed, r in enumerate(self.results):
            up_the_slope = jitter(seed)[0] < 0
            overlap = r.outcome == "FAIL" and r.reason.startswith(
                "parts 'ramp' and 'box' overlap at the start"
            )
            if not (r.outcome == "SUCCESS" or (overlap and up_the_slope)):
                problems.append(f"seed {seed}: unexpected {r.outcome}: {r.reason}")
        finals = {tuple(r.metrics.get("final_target_position_m") or ()) for r in self.results}
        if len(finals) < max(2, self.n // 2):
            problems.append(
                f"only {len(finals)} distinct final positions in {self.n} variants: "
                "the jitter does not vary the runs"
            )
        return problems


async def sweep(client, queue: str, label: str, n: int, *, cache: bool, server_pid) -> Sweep:
    requests = [variant(i, cache=cache) for i in range(n)]
    cpu0 = CpuTimes.now(server_pid)
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                "SimulationWorkflow",
                req,
                id=f"bench-sweep-{label}-{i}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
                result_type=SimulationResult,
            )
            for i, req in enumerate(requests)
        )
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    wall = time.perf_counter() - t0
    cpu = CpuTimes.now(server_pid) - cpu0
    return Sweep(label=label, results=list(results), wall_s=wall, cpu=cpu)


async def main(
    n: int, modes: list[str], warmups: int, profile: str | None, fresh_light: bool
) -> int:
    print(f"shopfloor simulation sweep benchmark — {machine_summary()}")
    sweeps: list[Sweep] = []
    async with in_process_worker("simulation") as w:
        client, settings, queue, plans = w.client, w.settings, w.queue, w.plans
        server_pid = w.server.proc.pid if w.server.proc else None
        slots = plans[queue].slots(settings)
        # Warm-up: the zygote's first forks, the dev server's first workflows. Uncached
        # runs, and cached ones of another source: the measured sweep builds its own
        # scene once. The cached ones bring up the worker's light zygote (what cached
        # runs fork from), as on a worker that served cached runs in the last 10 minutes.
        light = next(a.__self__.light for a in plans[queue].activities)
        warm_source = RAMP_BOX + "\n# another source: another cache key\n"
        for i in range(warmups):
            await run_one(client, queue, variant(1000 + i, cache=False))
        if not fresh_light and "cache" in modes:
            await run_one(client, queue, variant(1000, cache=True, source=warm_source))
            deadline = time.monotonic() + 60
            while not light.up and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for i in range(warmups):
                await run_one(client, queue, variant(1001 + i, cache=True, source=warm_source))
        print(f"light zygote up before the sweeps: {light.up}")
        for mode in modes:
            cache = mode == "cache"
            print(f"sweep {mode}: {n} variants on {slots} activity slots ...", flush=True)
            profiler = CpuProfile() if profile and mode == modes[-1] else None
            with profiler or contextlib.nullcontext():
                sweeps.append(
                    await sweep(client, queue, mode, n, cache=cache, server_pid=server_pid)
                )
            if profiler is not None and (stats := profiler.stats()) is not None:
                stats.dump_stats(profile)
                print(f"profile of this process during sweep {mode}: {profile}")

    rows = []
    for s in sweeps:
        cpu = s.cpu
        rows.append(
            [
                s.label,
                f"{s.rate:.1f}",
                f"{s.wall_s:.2f}",
                f"{cpu.total / s.n * 1000:.0f}",
                f"{cpu.this_process / s.n * 1000:.0f}",
                f"{cpu.children / s.n * 1000:.0f}",
                f"{cpu.server / s.n * 1000:.0f}",
                f"{cpu.total / s.wall_s:.2f}",
                str(s.cache_hits()),
            ]
        )
    print_table(
        [
            "sweep",
            "sims/s",
            "wall s",
            "CPU ms/variant",
            "worker+client",
            "runs+zygotes",
            "dev server",
            "cores busy",
            "cache hits",
        ],
        rows,
        title=f"{n} variants of the reference scene, render off, seeds 0..{n - 1}, 5 mm jitter",
    )
    print_table(
        ["stage (median ms)", *(s.label for s in sweeps)],
        [[stage, *(f"{s.stage_ms(stage):.1f}" for s in sweeps)] for stage in STAGES],
        title="Stage timings the runs report",
    )
    problems = []
    for s in sweeps:
        finals = {tuple(r.metrics.get("final_target_position_m") or ()) for r in s.results}
        outcomes = {o: sum(1 for r in s.results if r.outcome == o) for o in ("SUCCESS", "FAIL")}
        print(
            f"{s.label}: outcomes {outcomes}, {len(finals)} distinct final target positions "
            f"in {s.n} variants"
        )
        problems += [f"{s.label}: {p}" for p in s.check()]
    if len(sweeps) == 2:
        a, b = sweeps
        same = sum(
            1
            for x, y in zip(a.results, b.results, strict=True)
            if x.outcome == y.outcome
            and x.reason == y.reason
            and x.warnings == y.warnings
            and _physics(x) == _physics(y)
        )
        print(f"variants with identical outcome, reason, warnings and metrics in both: {same}/{n}")
        if same != n:
            problems.append(f"only {same}/{n} variants agree with and without the cache")

    by_label = {s.label: s for s in sweeps}
    main_sweep = by_label.get("cache") or sweeps[-1]
    before = by_label.get("no-cache")
    note = (
        f"{main_sweep.cpu.total / main_sweep.n * 1000:.0f} ms CPU/variant, "
        f"{main_sweep.cache_hits()}/{main_sweep.n} cache hits, {slots} slots"
    )
    if before is not None and before is not main_sweep:
        note += (
            f"; without the geometry cache {before.rate:.1f} sims/s, "
            f"{before.cpu.total / before.n * 1000:.0f} ms CPU/variant"
        )
    figures = [
        Figure(
            name=f"simulation sweep, {n} variants, no video",
            value=main_sweep.rate,
            unit="sims/s",
            goal=(">=", GOAL),
            anchor="absolute target (issue 13 measured 8.3 sims/s before)",
            note=note,
        )
    ]
    details = {
        s.label: {
            "sims_per_s": round(s.rate, 2),
            "wall_s": round(s.wall_s, 3),
            "cpu_ms_per_variant": {
                "total": round(s.cpu.total / s.n * 1000, 1),
                "worker_client": round(s.cpu.this_process / s.n * 1000, 1),
                "runs_zygotes": round(s.cpu.children / s.n * 1000, 1),
                "dev_server": round(s.cpu.server / s.n * 1000, 1),
            },
            "stage_ms_median": {stage: round(s.stage_ms(stage), 1) for stage in STAGES},
            "cache_hits": s.cache_hits(),
        }
        for s in sweeps
    }
    details["variants"], details["slots"] = n, slots
    print()
    record("sweep", figures, details=details)
    print_figures(figures)
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


def _physics(r: SimulationResult) -> dict:
    """The metrics that the physics decides (wall-clock timings aside)."""
    skip = {"timings_s", "wall_time_s", "physics_wall_s", "realtime_factor", "geometry_cache"}
    return {k: v for k, v in r.metrics.items() if k not in skip}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--warmups", type=int, default=3, help="uncached runs before measuring")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-cache", action="store_true", help="only the sweep without cache")
    group.add_argument("--cache-only", action="store_true", help="only the sweep with cache")
    parser.add_argument(
        "--fresh-light",
        action="store_true",
        help="no warm-up of the light zygote: it starts during the cached sweep, after the "
        "first build, as on a worker that has served no cached run in the last 10 minutes",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile (CPU time) of this process (worker + client) "
        "during the last sweep, all threads (slows it down: its figures are not comparable)",
    )
    args = parser.parse_args()
    modes = ["no-cache", "cache"]
    if args.no_cache or args.cache_only:
        modes = ["no-cache"] if args.no_cache else ["cache"]
    raise SystemExit(
        asyncio.run(main(args.variants, modes, args.warmups, args.profile, args.fresh_light))
    )
