"""Short script jobs through shopfloor vs a plain temporalio workflow, on one dev server.

What is compared (same process, same run, separate task queues):

* baseline: the SDK's defaults. A plain `Worker` (default options, default data converter)
  with one workflow whose one activity runs `subprocess.run([sys.executable, script_path])`.
  The activity is sync, so it needs an `activity_executor`: `ThreadPoolExecutor(100)`, which
  matches the SDK's default of 100 activity slots (fewer threads than slots would make the
  executor, not the worker, the limit). Started without eager start (the SDK default).
* baseline, plain start-dev: the same baseline on a second server started as Temporal's docs
  give it, `temporal server start-dev --db-filename F` (SQLite's default journal, no WAL):
  the anchor of "the SDK's defaults on plain start-dev".
* shopfloor: the `script` kind's workers as `shopfloor worker` builds them (`build_workers`),
  in this process and on the same client that starts the jobs, so `request_eager_start=True`
  can hand the first workflow task straight back. Reported with and without eager start.

Two measurements, the sides alternated (latency: job by job; throughput: batch by batch in a
rotating order) so that machine noise hits every side alike:

* latency: jobs one at a time, submit → result, p50/p99;
* throughput: `--jobs` jobs per side with `--concurrency` in flight, jobs/s, plus the CPU each
  job cost (this process, the scripts, the dev server): on a small machine that is the limit.

Then where the sequential jobs' time goes, from the server's own history timestamps. The
benchmark measures, it does not assert: the exit code is 0 whatever the ratios (but not if a
job fails, since then nothing was measured).

    .venv/bin/python benchmarks/bench_scripts.py [--jobs 160] [--latency-jobs 40] [--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

# This file is also the baseline's workflow module, which the workflow sandbox re-executes for
# every workflow run. Passing these imports through (as the SDK advises for workflow files)
# keeps re-importing them off the baseline's per-job cost.
with workflow.unsafe.imports_passed_through():
    from _common import (
        AllThreadsProfile,
        CpuTimes,
        Samples,
        fmt_ms,
        machine_summary,
        print_table,
        ratio,
        run_bounded,
        run_sequential,
        temp_dev_server,
        temp_plain_dev_server,
        timeline,
    )
    from _report import Figure, print_figures, record

    from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
    from shopfloor.registry import queue_for
    from shopfloor.settings import Settings
    from shopfloor.temporal import connect
    from shopfloor.worker import build_workers, kind_resources, select_kinds

SCRIPT = 'print("hi")\n'
EXPECTED_STDOUT = "hi\n"
BASELINE_EXECUTOR_THREADS = 100  # the SDK's default activity slot count; see the docstring
PLAIN = "baseline, plain start-dev"  # the same baseline on `start-dev --db-filename`, no WAL


# -- the baseline: plain temporalio, SDK defaults --------------------------------------------


@dataclass
class BaselineResult:
    exit_code: int
    stdout: str
    duration_s: float  # the subprocess alone, to split activity time as shopfloor's result does


@activity.defn(name="baseline_run_script")
def baseline_run_script(script_path: str) -> BaselineResult:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script_path], capture_output=True, text=True)
    return BaselineResult(proc.returncode, proc.stdout, time.perf_counter() - t0)


@workflow.defn(name="BaselineScriptWorkflow")
class BaselineScriptWorkflow:
    @workflow.run
    async def run(self, script_path: str) -> BaselineResult:
        return await workflow.execute_activity(
            baseline_run_script, script_path, start_to_close_timeout=timedelta(seconds=60)
        )


# -- one side of the comparison --------------------------------------------------------------


@dataclass
class Trace:
    """One job's client-side times (epoch seconds), kept for the breakdown."""

    handle: WorkflowHandle[Any, Any]
    submitted: float
    started: float  # start_workflow returned
    finished: float  # the result arrived
    child_s: float  # the script's own process, as the activity measured it


@dataclass
class Side:
    name: str
    client: Client
    workflow: str
    arg: object
    result_type: type
    task_queue: str
    eager: bool
    server_pid: int | None = None  # the dev server this side's jobs run on (CPU accounting)
    latency: Samples = field(default_factory=Samples)
    throughput: Samples = field(default_factory=Samples)
    recording: bool = False  # append a Trace per job (latency phase only)
    traces: list[Trace] = field(default_factory=list)
    jobs: int = 0
    eager_hits: int = 0

    async def run_one(self) -> None:
        submitted = time.time()
        handle = await self.client.start_workflow(
            self.workflow,
            self.arg,
            id=f"bench-{self.name.replace(' ', '-')}-{uuid.uuid4().hex}",
            task_queue=self.task_queue,
            result_type=self.result_type,
            request_eager_start=self.eager,
        )
        started = time.time()
        result = await handle.result()
        finished = time.time()
        child_s = _check(self.name, result)
        self.jobs += 1
        # A private SDK attribute (set with setattr, so not name-mangled): whether the server
        # did hand the first workflow task back with the start response. Asking is not getting.
        self.eager_hits += bool(getattr(handle, "__temporal_eagerly_started", False))
        if self.recording:
            self.traces.append(Trace(handle, submitted, started, finished, child_s))


def _check(side: str, result: object) -> float:
    """A failed job means nothing was measured: stop loudly. Returns the child's duration."""
    if isinstance(result, ScriptResult):
        ok, out, child_s = result.ok, result.stdout_tail, result.duration_s
    elif isinstance(result, BaselineResult):
        ok, out, child_s = result.exit_code == 0, result.stdout, result.duration_s
    else:
        raise TypeError(f"{side}: unexpected result {result!r}")
    if not ok or out != EXPECTED_STDOUT:
        raise RuntimeError(f"{side}: the script did not run as expected: {result!r}")
    return child_s


def rotated(sides: list[Side], i: int) -> list[Side]:
    k = i % len(sides)
    return sides[k:] + sides[:k]


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# -- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    # The profiler must be on before the workers start their threads (see AllThreadsProfile).
    profile = AllThreadsProfile() if args.profile else None
    with (
        temp_dev_server() as (server, root),
        temp_plain_dev_server() as (plain_pid, plain_address),
        profile or contextlib.nullcontext(),
    ):
        script_path = root / "hi.py"
        script_path.write_text(SCRIPT)
        overrides: dict[str, Any] = {}
        if args.shopfloor_max_activities is not None:
            overrides["worker_max_concurrent_activities"] = args.shopfloor_max_activities
        settings = Settings(
            temporal_address=server.address,
            data_dir=root / "shopfloor",
            task_queue_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
            **overrides,
        )
        sf_client = await connect(settings)
        base_client = await Client.connect(server.address)  # the default data converter
        plain_client = await connect_when_healthy(plain_address)
        server_pid = server.proc.pid if server.proc else None
        served = select_kinds(["script"])
        sf_queue = queue_for(served[0], settings)
        base_queue = f"bench-baseline-{uuid.uuid4().hex[:8]}"
        sf_input = ScriptInput(source=SCRIPT)
        sides = [
            Side("baseline", base_client, "BaselineScriptWorkflow", str(script_path),
                 BaselineResult, base_queue, eager=False, server_pid=server_pid),
            Side("shopfloor eager", sf_client, "ScriptExecutionWorkflow", sf_input,
                 ScriptResult, sf_queue, eager=True, server_pid=server_pid),
            Side("shopfloor no-eager", sf_client, "ScriptExecutionWorkflow", sf_input,
                 ScriptResult, sf_queue, eager=False, server_pid=server_pid),
            Side(PLAIN, plain_client, "BaselineScriptWorkflow", str(script_path),
                 BaselineResult, base_queue, eager=False, server_pid=plain_pid),
        ]  # fmt: skip
        print(
            f"dev server {server.address}; {machine_summary()}\n"
            f"shopfloor worker: build_workers(), max_concurrent_activities="
            f"{settings.worker_max_concurrent_activities}; baseline worker: SDK defaults, "
            f"ThreadPoolExecutor({BASELINE_EXECUTOR_THREADS}) for its sync activity"
        )
        if profile is not None:
            print("profiling: cProfile slows Python down; the figures below are not comparable")

        stats = None
        with ThreadPoolExecutor(max_workers=BASELINE_EXECUTOR_THREADS) as executor:
            workers = [
                Worker(
                    client,
                    task_queue=base_queue,
                    workflows=[BaselineScriptWorkflow],
                    activities=[baseline_run_script],
                    activity_executor=executor,
                )
                for client in (base_client, plain_client)
            ]
            async with contextlib.AsyncExitStack() as stack:
                plans = await stack.enter_async_context(kind_resources(settings, served))
                workers.extend(build_workers(sf_client, settings, plans))  # as `shopfloor worker`
                for worker in workers:
                    await stack.enter_async_context(worker)
                await measure(sides, args, profile)
                # Read now: the workers' threads (and their profilers) end with the workers.
                stats = profile.stats() if profile is not None else None

        # The workers are stopped; the breakdown's histories still need the server.
        await report(sides, args)
        if stats is not None:
            stats.dump_stats(args.profile)
            print(f"\ncProfile of all threads, measured phases, all sides: {args.profile}")
            stats.strip_dirs().sort_stats("tottime").print_stats(30)


async def measure(
    sides: list[Side], args: argparse.Namespace, profile: AllThreadsProfile | None
) -> None:
    t0 = time.perf_counter()
    # Warm-up: first-use costs (sandbox imports, pollers, thread pools, sticky caches, the page
    # cache for the interpreter) out of the numbers.
    for side in sides:
        await run_sequential(args.warmup, side.run_one)
        await run_bounded(args.concurrency, args.concurrency, side.run_one)
    print(f"warm-up: {time.perf_counter() - t0:.1f}s")
    if profile is not None:
        profile.reset()

    t0 = time.perf_counter()
    for side in sides:
        side.recording = True
    for i in range(args.latency_jobs):  # alternate job by job
        for side in rotated(sides, i):
            side.latency.extend(await run_sequential(1, side.run_one))
    for side in sides:
        side.recording = False
    print(f"latency phase: {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    for r, n in enumerate(split(args.jobs, args.rounds)):  # alternate batch by batch
        for side in rotated(sides, r):
            before = CpuTimes.now(side.server_pid)
            batch = await run_bounded(n, args.concurrency, side.run_one)
            batch.cpu = CpuTimes.now(side.server_pid) - before
            side.throughput.extend(batch)
    print(f"throughput phase: {time.perf_counter() - t0:.1f}s")


# -- reporting -------------------------------------------------------------------------------


async def report(sides: list[Side], args: argparse.Namespace) -> None:
    print_table(
        ["side", "jobs", "p50 ms", "p99 ms", "mean ms", "eager-started (all jobs)"],
        [
            [
                s.name,
                str(s.latency.n),
                fmt_ms(s.latency.p(50)),
                fmt_ms(s.latency.p(99)),
                fmt_ms(s.latency.mean),
                f"{s.eager_hits}/{s.jobs}",
            ]
            for s in sides
        ],
        title="Latency: one job at a time, submit → result",
    )
    print_table(
        ["side", "jobs", "wall s", "jobs/s", "p50 ms", "p99 ms"],
        [
            [
                s.name,
                str(s.throughput.n),
                f"{s.throughput.wall_s:.2f}",
                f"{s.throughput.throughput:.1f}",
                fmt_ms(s.throughput.p(50)),
                fmt_ms(s.throughput.p(99)),
            ]
            for s in sides
        ],
        title=f"Throughput: {args.concurrency} jobs in flight, {args.rounds} alternating rounds",
    )
    print_cpu(sides)
    await print_breakdown(sides)

    base = sides[0]
    print()
    for s in sides[1:3]:
        variant = s.name.removeprefix("shopfloor ")
        tput = ratio(s.throughput.throughput, base.throughput.throughput)
        print(f"throughput ratio shopfloor/baseline: {tput:.2f}x  ({variant}; higher is better)")
        for q in (50, 99):
            lat = ratio(s.latency.p(q), base.latency.p(q))
            print(
                f"p{q} latency ratio shopfloor/baseline: {lat:.2f}x  ({variant}; lower is better)"
            )

    figures = goal_figures(sides)
    print()
    print_figures(figures)
    record("scripts", figures, details=details(sides, args))


def goal_figures(sides: list[Side]) -> list[Figure]:
    """The figures of the performance goals, each against the anchor the goal names."""
    base, eager, plain = sides[0], sides[1], sides[3]
    cpu, n = eager.throughput.cpu, eager.throughput.n
    per_job = (cpu.total / n) if cpu is not None and n else math.nan
    split = (
        f"server {cpu.server / n * 1000:.1f} / worker+client {cpu.this_process / n * 1000:.1f}"
        f" / script processes {cpu.children / n * 1000:.1f} ms"
        if cpu is not None and n
        else ""
    )
    return [
        Figure(
            "script jobs/s vs the SDK's defaults on plain start-dev",
            ratio(eager.throughput.throughput, plain.throughput.throughput),
            "x",
            (">=", 2.5),
            "temporalio defaults (sync activity, subprocess.run) on `temporal server start-dev "
            "--db-filename` (no WAL), same run",
            f"{eager.throughput.throughput:.1f} vs {plain.throughput.throughput:.1f} jobs/s",
        ),
        Figure(
            "script jobs/s vs the SDK on the same tuned server",
            ratio(eager.throughput.throughput, base.throughput.throughput),
            "x",
            (">=", 1.5),
            "the same temporalio baseline on shopfloor's embedded server (WAL), same run",
            f"{eager.throughput.throughput:.1f} vs {base.throughput.throughput:.1f} jobs/s",
        ),
        Figure(
            "script job p50, submit → result",
            eager.latency.p(50) * 1000,
            "ms",
            ("<=", 40),
            f"absolute; the SDK baseline on the same server: {base.latency.p(50) * 1000:.0f} ms",
        ),
        Figure(
            "CPU per script job",
            per_job * 1000,
            "ms",
            ("<=", 25),
            f"absolute; the SDK baseline on the same server: {_cpu_per_job(base) * 1000:.1f} ms",
            split,
        ),
    ]


def _cpu_per_job(side: Side) -> float:
    cpu, n = side.throughput.cpu, side.throughput.n
    return cpu.total / n if cpu is not None and n else math.nan


def details(sides: list[Side], args: argparse.Namespace) -> dict:
    return {
        "jobs": args.jobs,
        "latency_jobs": args.latency_jobs,
        "concurrency": args.concurrency,
        "sides": {
            s.name: {
                "jobs_per_s": round(s.throughput.throughput, 2),
                "p50_ms": round(s.latency.p(50) * 1000, 1),
                "p99_ms": round(s.latency.p(99) * 1000, 1),
                "cpu_ms_per_job": round(_cpu_per_job(s) * 1000, 1),
            }
            for s in sides
        },
    }


async def connect_when_healthy(address: str) -> Client:
    """A client of a server whose port is open but whose frontend may still be starting."""
    for _ in range(100):
        try:
            return await Client.connect(address)
        except RuntimeError:
            await asyncio.sleep(0.2)
    return await Client.connect(address)


def print_cpu(sides: list[Side]) -> None:
    rows = []
    for s in sides:
        cpu, n = s.throughput.cpu, s.throughput.n
        if cpu is None or not n:
            continue
        rows.append(
            [
                s.name,
                fmt_ms(cpu.this_process / n),
                fmt_ms(cpu.children / n),
                fmt_ms(cpu.server / n),
                fmt_ms(cpu.total / n),
                f"{cpu.total / s.throughput.wall_s:.2f}",
            ]
        )
    print_table(
        ["side", "worker+client", "scripts", "dev server", "total", "cores busy"],
        rows,
        title="CPU ms per job during the throughput runs (workers and client share a process)",
    )


async def print_breakdown(sides: list[Side]) -> None:
    """Median time per phase of the sequential jobs, from client clocks and server history."""
    columns: list[str] = []
    medians: dict[str, list[str]] = {}
    for side in sides:
        per_phase: dict[str, list[float]] = {}
        for t in side.traces:
            tl = await timeline(t.handle)
            phases = {
                "start rpc (client)": t.started - t.submitted,
                **tl.phases,
                "result → client": t.finished - tl.closed_at,
                "total (client)": t.finished - t.submitted,
                "of act run: script process": t.child_s,
                "of act run: the rest": tl.phases.get("act run", float("nan")) - t.child_s,
            }
            for name, value in phases.items():
                per_phase.setdefault(name, []).append(value)
        columns = columns or list(per_phase)
        medians[side.name] = [fmt_ms(_median(per_phase.get(c, []))) for c in columns]
    # Phases down, sides across: it is read phase by phase.
    print_table(
        ["median ms", *medians],
        [[c, *(m[i] for m in medians.values())] for i, c in enumerate(columns)],
        title="Where the time goes: sequential jobs (server phases from workflow history)",
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--jobs", type=int, default=160, help="throughput jobs per side")
    p.add_argument("--latency-jobs", type=int, default=40, help="sequential jobs per side")
    p.add_argument("--concurrency", type=int, default=16, help="jobs in flight (throughput)")
    p.add_argument("--rounds", type=int, default=4, help="alternating throughput rounds")
    p.add_argument("--warmup", type=int, default=5, help="sequential warm-up jobs per side")
    p.add_argument(
        "--shopfloor-max-activities",
        type=int,
        default=None,
        help="override Settings.worker_max_concurrent_activities for the shopfloor worker",
    )
    p.add_argument(
        "--profile", metavar="FILE", help="cProfile all threads during the measured phases"
    )
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    asyncio.run(run(args))
    print(f"\nbenchmark took {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
