"""How the cost grows: script-job throughput with 1, 2 and 4 worker processes on one dev
server, and job latency while 1 000 long jobs sleep on durable timers.

What is compared (one dev server, one run, real `shopfloor worker` processes as an operator
starts them, the job `print("hi")` as `ScriptExecutionWorkflow` on the script kind's queue):

* throughput: `--jobs` jobs with `--concurrency` in flight against N = 1, 2, 4 worker processes
  (`shopfloor worker --kind script`), after a warm-up per N; jobs/s, p50/p99 submit → result,
  the ratio to N = 1, how the activities spread over the processes (from workflow history) and
  where the CPU went (workers and their scripts, dev server, this client). The sizes are
  measured up and then down again (1, 2, 4, 4, 2, 1: `--rounds 2`) and pooled, so drift over
  the run hits every size alike. Each process has the script queue's default 8 activity
  slots, so one process runs at most 8 of the 16 jobs in flight at once;
* latency under sleeping load: one worker serving the script and phased kinds; `--latency-jobs`
  jobs one at a time, each after a short random pause (`--gap`; each case after
  `--latency-warmup` more) with no other job, then with
  `--sleepers` `PhasedWorkflow`s asleep whose only step is a 1 h `delay` (each one's history is
  checked for its 1 h TimerStarted event), then again once they are terminated: A B A, so
  drift is not taken for their cost. Also shown: where the jobs' time goes (server history),
  how long starting the sleepers took, and the memory of the worker and the dev server.

The machine has 2 cores: more worker processes add pollers and slots, not CPU, so on this
machine throughput is bounded by the CPU of the scripts, workers and dev server together — the
CPU table says how close to that it ran. The benchmark measures, it does not assert: exit 0
unless a job fails. Everything (server, workers, temp dir) is stopped and removed at the end,
also on Ctrl-C.

    .venv/bin/python benchmarks/bench_scale.py [--jobs 120] [--concurrency 16] [--sleepers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    Samples,
    _proc_cpu,
    bench_main,
    fmt_ms,
    machine_summary,
    print_table,
    ratio,
    run_bounded,
    temp_dev_server,
    timeline,
)
from _procs import (
    argv_of,
    clean_env,
    descendants,
    memory_of,
    remove_work_roots,
    shopfloor_cli,
    start_time,
)
from _report import Figure, print_figures, record
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from shopfloor.jobstate import runs_in_history
from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult
from shopfloor.processes import die_with_parent, stop_process
from shopfloor.registry import kind_named, queue_for
from shopfloor.settings import Settings
from shopfloor.temporal import connect

SCRIPT = 'print("hi")\n'
EXPECTED_STDOUT = "hi\n"
SLEEP = "1h"
SLEEPER = {
    "definition": {
        "name": "bench-sleeper",
        "steps": [{"id": "sleep", "type": "delay", "duration": SLEEP}],
    }
}
READY_TIMEOUT_S = 120.0


class BenchFailed(RuntimeError):
    pass


# -- worker processes ----------------------------------------------------------------------------


@dataclass
class WorkerProc:
    name: str
    kinds: list[str]
    proc: subprocess.Popen
    log: Path
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time of its tree

    def tree(self) -> list[int]:
        pids = descendants(self.proc.pid) if self.proc.poll() is None else []
        for pid in pids:
            started = start_time(pid)
            if started is not None:
                self.seen.setdefault(pid, started)
        return pids

    def cpu_s(self) -> float:
        """CPU of the worker, its zygotes and every script they reaped."""
        return sum(_proc_cpu(pid, with_reaped=True) for pid in self.tree())

    def memory_kb(self) -> tuple[int, int]:
        """(PSS, RSS) of the worker and its zygotes."""
        mems = [m for m in map(memory_of, self.tree()) if m is not None]
        return sum(m.pss for m in mems), sum(m.rss for m in mems)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class WorkerPool:
    """`shopfloor worker` processes against one server, each with its own data dir (and one
    artifact store, as workers of one deployment share). Stopped with SIGTERM, as an operator
    stops them; whatever of their trees outlives them is killed."""

    def __init__(self, root: Path, address: str, prefix: str) -> None:
        self.root = root
        self.address = address
        self.prefix = prefix
        self.workers: list[WorkerProc] = []
        self._count = 0
        self._seen: dict[int, int] = {}

    async def start(self, kinds: list[str], n: int = 1) -> list[WorkerProc]:
        """`n` new workers serving `kinds`; returns once each has said "worker ready"."""
        started = []
        for _ in range(n):
            self._count += 1
            name = f"worker-{self._count}"
            data_dir = self.root / name
            data_dir.mkdir()
            env = clean_env(
                temporal_address=self.address,
                data_dir=str(data_dir),
                artifact_dir=str(self.root / "artifacts"),
                task_queue_prefix=self.prefix,
                worker_metrics_port="0",
            )
            log = data_dir / "worker.log"
            with open(log, "wb") as out:
                argv = [shopfloor_cli(), "worker", *(a for k in kinds for a in ("--kind", k))]
                proc = subprocess.Popen(
                    argv,
                    cwd=data_dir,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
                    preexec_fn=die_with_parent(),  # and they stop if we are killed
                )
            worker = WorkerProc(name, kinds, proc, log)
            self.workers.append(worker)
            started.append(worker)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in started:
            while "worker ready" not in worker.log.read_text(errors="replace"):
                if worker.proc.poll() is not None:
                    raise BenchFailed(
                        f"{worker.name} exited ({worker.proc.returncode}):\n{worker.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise BenchFailed(f"{worker.name} not ready:\n{worker.log_tail()}")
                await asyncio.sleep(0.2)
            worker.tree()
        return started

    async def resize(self, n: int, kinds: list[str]) -> None:
        """Exactly `n` workers serving `kinds`: the newest stop first, new ones start."""
        while len(self.workers) > n:
            await self.stop(self.workers[-1])
        if len(self.workers) < n:
            await self.start(kinds, n - len(self.workers))

    async def stop(self, worker: WorkerProc) -> None:
        worker.tree()
        self.workers.remove(worker)
        await asyncio.to_thread(stop_process, worker.proc, timeout_s=30)
        self._seen.update(worker.seen)
        self._reap(worker.seen, worker.proc.pid)

    async def close(self) -> None:
        for worker in list(reversed(self.workers)):
            await self.stop(worker)
        remove_work_roots(self._seen)

    def close_now(self) -> None:
        """For a cancelled run: no awaiting, just stop them all."""
        for worker in list(reversed(self.workers)):
            worker.tree()
            stop_process(worker.proc, timeout_s=30)
            self._seen.update(worker.seen)
            self._reap(worker.seen, worker.proc.pid)
        self.workers.clear()
        remove_work_roots(self._seen)

    @staticmethod
    def _reap(seen: dict[int, int], root: int) -> None:
        left = [pid for pid, t in seen.items() if pid != root and start_time(pid) == t]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            names = ", ".join(" ".join(argv_of(p))[:80] or str(p) for p in left)
            print(f"  WARNING: {len(left)} process(es) outlived their worker: {names}")

    def cpu_s(self) -> float:
        return sum(w.cpu_s() for w in self.workers)

    def by_identity(self) -> dict[str, str]:
        """Temporal's worker identity (`<pid>@<host>`, the SDK default) → our worker name."""
        host = socket.gethostname()
        return {f"{w.proc.pid}@{host}": w.name for w in self.workers}


# -- jobs ------------------------------------------------------------------------------------


@dataclass
class Jobs:
    client: Client
    script_queue: str
    phased_queue: str
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)
    keep: bool = False  # append each script job's handle (for the spread over workers)

    async def script(self) -> None:
        handle = await self.client.start_workflow(
            "ScriptExecutionWorkflow",
            ScriptInput(source=SCRIPT),
            id=f"bench-scale-{uuid.uuid4().hex}",
            task_queue=self.script_queue,
            result_type=ScriptResult,
        )
        result = await handle.result()
        if not result.ok or result.stdout_tail != EXPECTED_STDOUT:
            raise BenchFailed(f"a script job did not run as expected: {result!r}")
        if self.keep:
            self.handles.append(handle)

    async def sleeper(self, sleepers: list[WorkflowHandle[Any, Any]]) -> None:
        sleepers.append(
            await self.client.start_workflow(
                "PhasedWorkflow",
                SLEEPER,
                id=f"bench-sleeper-{uuid.uuid4().hex}",
                task_queue=self.phased_queue,
            )
        )


async def activity_workers(handles: list[WorkflowHandle[Any, Any]]) -> Counter[str]:
    """Who ran each job's activity to its end (`jobstate.runs_in_history`)."""
    found: Counter[str] = Counter()
    sem = asyncio.Semaphore(16)

    async def one(handle: WorkflowHandle[Any, Any]) -> None:
        async with sem:
            events = (await handle.fetch_history()).events
        for worker, completed in runs_in_history(events):
            if completed:
                found[worker] += 1

    await asyncio.gather(*(one(h) for h in handles))
    return found


async def wait_asleep(sleepers: list[WorkflowHandle[Any, Any]], timeout_s: float) -> None:
    """Until every sleeper's history shows its timer started (a durable 1 h timer, not a
    workflow still waiting for its first task, nor one that ended)."""
    pending = list(sleepers)
    deadline = time.monotonic() + timeout_s
    sem = asyncio.Semaphore(32)

    async def asleep(handle: WorkflowHandle[Any, Any]) -> bool:
        async with sem:
            events = (await handle.fetch_history()).events
        types = {e.event_type for e in events}
        if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in types or (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED in types
        ):
            raise BenchFailed(f"sleeper {handle.id} ended instead of sleeping")
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                timeout = e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                if timeout.total_seconds() < 3000:
                    raise BenchFailed(f"sleeper {handle.id}: a {timeout} timer, not {SLEEP}")
                return True
        return False

    # Tasks are taken about in start order: wait on the last one alone (checking them all
    # again and again would load the server the worker is busy with), then check every one.
    while pending and not await asleep(pending[-1]):
        if time.monotonic() > deadline:
            raise BenchFailed(f"sleepers not asleep after {timeout_s:g}s")
        await asyncio.sleep(0.25)
    while pending:
        done = await asyncio.gather(*(asleep(h) for h in pending))
        pending = [h for h, ok in zip(pending, done, strict=True) if not ok]
        if pending:
            if time.monotonic() > deadline:
                raise BenchFailed(f"{len(pending)} sleepers not asleep after {timeout_s:g}s")
            await asyncio.sleep(0.5)


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Cpu:
    workers: float = 0.0
    server: float = 0.0
    client: float = 0.0

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.workers + other.workers, self.server + other.server, self.client + other.client
        )

    @property
    def total(self) -> float:
        return self.workers + self.server + self.client


@dataclass
class SizeResult:
    workers: int
    samples: Samples = field(default_factory=Samples)
    cpu: Cpu = field(default_factory=Cpu)
    spread: Counter[str] = field(default_factory=Counter)


def cpu_now(pool: WorkerPool, server_pid: int | None) -> Cpu:
    t = os.times()  # our own CPU only: stopped workers, once reaped, count as our children
    return Cpu(pool.cpu_s(), _proc_cpu(server_pid), t.user + t.system)


async def throughput(
    args: argparse.Namespace, pool: WorkerPool, jobs: Jobs, server_pid: int | None
) -> dict[int, SizeResult]:
    results = {n: SizeResult(n) for n in args.sizes}
    order: list[int] = []
    for r in range(args.rounds):
        order += list(args.sizes) if r % 2 == 0 else list(reversed(args.sizes))
    for n in order:
        t0 = time.perf_counter()
        await pool.resize(n, ["script"])
        # Warm-up: every process's pollers, sticky cache and zygote see work first.
        await run_bounded(args.warmup, args.concurrency, jobs.script)
        before = cpu_now(pool, server_pid)
        jobs.handles.clear()
        jobs.keep = True
        batch = await run_bounded(args.jobs, args.concurrency, jobs.script)
        jobs.keep = False
        after = cpu_now(pool, server_pid)
        res = results[n]
        res.samples.extend(batch)
        res.cpu = res.cpu + Cpu(
            after.workers - before.workers,
            after.server - before.server,
            after.client - before.client,
        )
        names = pool.by_identity()
        spread = await activity_workers(jobs.handles)
        res.spread.update({names.get(ident, ident): count for ident, count in spread.items()})
        print(
            f"  {n} worker(s): {batch.n} jobs in {batch.wall_s:.1f}s = {batch.throughput:.1f} "
            f"jobs/s (with start-up and warm-up: {time.perf_counter() - t0:.1f}s)"
        )
    return results


@dataclass
class LoadResult:
    cases: dict[str, Samples]  # in the order measured: before, with sleepers, after
    with_case: str  # the key of the one with sleepers
    sleepers: int
    start_s: float  # to start them all (start_workflow calls)
    asleep_s: float  # from the first start until every one was on its timer
    terminate_s: float  # to terminate them all
    memory: dict[str, tuple[int, int]]  # "worker, no sleepers" … → (PSS, RSS) kB
    phases: dict[str, dict[str, float]]  # case → phase of the jobs' histories → median s

    @property
    def without(self) -> Samples:
        """Both measurements without sleepers, pooled (before they start, after they go)."""
        pooled = Samples()
        for label, samples in self.cases.items():
            if label != self.with_case:
                pooled.extend(samples)
        return pooled

    @property
    def with_sleepers(self) -> Samples:
        return self.cases[self.with_case]


async def latency_under_sleepers(
    args: argparse.Namespace, pool: WorkerPool, jobs: Jobs, server_pid: int | None
) -> LoadResult:
    """A B A: without sleepers, with them asleep, and without again once they are terminated
    (the worker is not told: their entries stay in its cache until evicted), so drift over
    the phase does not pass for their cost."""
    before, asleep, after = "no sleepers yet", f"{args.sleepers} asleep", "sleepers terminated"
    await pool.resize(0, [])
    (worker,) = await pool.start(["script", "phased"])
    memory: dict[str, tuple[int, int]] = {}
    cases: dict[str, Samples] = {}
    handles: dict[str, list[WorkflowHandle[Any, Any]]] = {}

    def remember_memory(case: str) -> None:
        memory[f"worker, {case}"] = worker.memory_kb()
        server_mem = memory_of(server_pid) if server_pid else None
        if server_mem:
            memory[f"dev server, {case}"] = (server_mem.pss, server_mem.rss)

    rng = random.Random(1)

    async def measure(case: str) -> None:
        await run_spaced(args.latency_warmup, jobs.script, rng, args.gap)
        cases[case], handles[case] = await _recorded(
            jobs, run_spaced(args.latency_jobs, jobs.script, rng, args.gap)
        )
        print(f"  {case}: {args.latency_jobs} sequential jobs, p50 {fmt_ms(cases[case].p(50))} ms")

    remember_memory(before)
    await measure(before)

    sleepers: list[WorkflowHandle[Any, Any]] = []
    t0 = time.perf_counter()
    await run_bounded(args.sleepers, args.start_concurrency, lambda: jobs.sleeper(sleepers))
    start_s = time.perf_counter() - t0
    await wait_asleep(sleepers, timeout_s=300)
    asleep_s = time.perf_counter() - t0
    print(
        f"  {len(sleepers)} sleepers started in {start_s:.1f}s, all asleep on their "
        f"{SLEEP} timers after {asleep_s:.1f}s; settling {args.settle:g}s"
    )
    await asyncio.sleep(args.settle)
    await measure(asleep)
    remember_memory(asleep)

    t0 = time.perf_counter()
    queue = list(sleepers)

    async def terminate() -> None:
        await queue.pop().terminate(reason="bench_scale: done")

    await run_bounded(len(queue), args.start_concurrency, terminate)
    terminate_s = time.perf_counter() - t0
    print(f"  terminated them in {terminate_s:.1f}s; settling {args.settle:g}s")
    await asyncio.sleep(args.settle)
    await measure(after)
    remember_memory(after)

    phases = {case: await median_phases(hs) for case, hs in handles.items()}
    await pool.close()
    return LoadResult(cases, asleep, len(sleepers), start_s, asleep_s, terminate_s, memory, phases)


async def run_spaced(
    n: int, job: Callable[[], Awaitable[object]], rng: random.Random, gap_s: float
) -> Samples:
    """`n` jobs one at a time, each after an idle pause of 0.5–1.5 × `gap_s` (not counted):
    a job that arrives at a random moment, as a lone job does. Back to back (no pause), jobs
    lock onto a ~100 ms cycle after ~20 of them (the first workflow task then waits ~40 ms
    for its poll, see README), and which phase of it a run locks onto varies from run to run:
    that would pass for a cost of the sleepers."""
    out = Samples()
    for _ in range(n):
        if gap_s > 0:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * gap_s)
        t0 = time.perf_counter()
        await job()
        out.latencies.append(time.perf_counter() - t0)
        out.wall_s += time.perf_counter() - t0
    return out


async def _recorded(
    jobs: Jobs, measurement: Coroutine[Any, Any, Samples]
) -> tuple[Samples, list[WorkflowHandle[Any, Any]]]:
    """The samples of `measurement` and the handles of the script jobs it ran."""
    jobs.handles.clear()
    jobs.keep = True
    try:
        samples = await measurement
    finally:
        jobs.keep = False
    return samples, list(jobs.handles)


async def median_phases(handles: list[WorkflowHandle[Any, Any]]) -> dict[str, float]:
    """Median seconds per phase (workflow task 1, activity, workflow task 2), from the
    server's own history timestamps: where a job's latency goes."""
    per_phase: dict[str, list[float]] = {}
    for handle in handles:
        for name, value in (await timeline(handle)).phases.items():
            per_phase.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in per_phase.items()}


# -- reporting -----------------------------------------------------------------------------------


def script_slots() -> int:
    """Activity slots of the script queue in one `shopfloor worker` with default settings."""
    kind = kind_named("script")
    default = Settings.model_fields["worker_max_concurrent_activities"].default
    return (kind.max_concurrent_activities if kind else None) or default


def throughput_rows(results: dict[int, SizeResult]) -> list[list[str]]:
    base = next(iter(results.values())).samples.throughput
    rows = []
    for n, res in results.items():
        s = res.samples
        rows.append(
            [
                str(n),
                str(n * script_slots()),
                str(s.n),
                f"{s.wall_s:.1f}",
                f"{s.throughput:.1f}",
                f"{ratio(s.throughput, base):.2f}x",
                fmt_ms(s.p(50)),
                fmt_ms(s.p(99)),
                " / ".join(str(c) for _, c in sorted(res.spread.items())),
            ]
        )
    return rows


def cpu_rows(results: dict[int, SizeResult]) -> list[list[str]]:
    rows = []
    for n, res in results.items():
        jobs, wall, cpu = res.samples.n, res.samples.wall_s, res.cpu
        rows.append(
            [
                str(n),
                fmt_ms(cpu.workers / jobs),
                fmt_ms(cpu.server / jobs),
                fmt_ms(cpu.client / jobs),
                fmt_ms(cpu.total / jobs),
                f"{cpu.total / wall:.2f}",
            ]
        )
    return rows


def load_rows(load: LoadResult) -> list[list[str]]:
    return [
        [label, str(s.n), fmt_ms(s.p(50)), fmt_ms(s.p(99)), fmt_ms(s.mean)]
        for label, s in (*load.cases.items(), ("no sleepers (both, pooled)", load.without))
    ]


def report(
    args: argparse.Namespace, results: dict[int, SizeResult], load: LoadResult
) -> tuple[list[Figure], dict]:
    headers = [
        "workers",
        "slots",
        "jobs",
        "wall s",
        "jobs/s",
        f"vs {next(iter(results))}",
        "p50 ms",
        "p99 ms",
        "jobs per worker",
    ]
    rows = throughput_rows(results)
    print_table(
        headers,
        rows,
        title=f'Throughput: print("hi") script jobs, {args.concurrency} in flight, '
        f"N `shopfloor worker --kind script` processes, {os.cpu_count()} cores",
    )
    cpu_headers = ["workers", "workers+scripts", "dev server", "client", "total", "cores busy"]
    crows = cpu_rows(results)
    print_table(cpu_headers, crows, title="CPU ms per job during the throughput runs")
    lrows = load_rows(load)
    print_table(
        ["one worker (script + phased)", "jobs", "p50 ms", "p99 ms", "mean ms"],
        lrows,
        title="Latency: script jobs one at a time, submit → result",
    )
    mrows = [[k, f"{p / 1024:.1f}", f"{r / 1024:.1f}"] for k, (p, r) in load.memory.items()]
    cases = list(load.phases)
    prows = [
        [phase, *(fmt_ms(load.phases[c].get(phase, math.nan)) for c in cases)]
        for phase in dict.fromkeys(p for c in cases for p in load.phases[c])
    ]
    print_table(
        ["median ms (server history)", *cases],
        prows,
        title="Where the sequential jobs' time goes",
    )
    print_table(["memory", "PSS MB", "RSS MB"], mrows, title="Memory around the sleepers")
    print(
        f"\n{load.sleepers} sleepers: started in {load.start_s:.1f}s "
        f"({load.sleepers / load.start_s:.0f}/s, {args.start_concurrency} starts in flight); "
        f"all asleep after {load.asleep_s:.1f}s; terminated in {load.terminate_s:.1f}s"
    )

    sizes = list(results)
    base = results[sizes[0]]
    busy = {n: r.cpu.total / r.samples.wall_s for n, r in results.items()}
    cpu_note = (
        f"{os.cpu_count()} cores; cores busy "
        + ", ".join(f"{busy[n]:.2f} at {n}" for n in sizes)
        + f"; CPU per job {base.cpu.total / base.samples.n * 1000:.0f} ms at {sizes[0]} "
        "(scripts + workers + dev server + client): more processes cannot add CPU here; "
        f"each process adds {script_slots()} script slots ({args.concurrency} jobs in flight)"
    )
    figures = [
        Figure(
            name=f"script-job throughput, {n} worker processes / {sizes[0]}",
            value=ratio(results[n].samples.throughput, base.samples.throughput),
            unit="x",
            goal=None,
            anchor=f"{sizes[0]} worker process(es), same server, same run "
            f"({base.samples.throughput:.1f} "
            f"jobs/s, {args.concurrency} in flight)",
            note=cpu_note,
        )
        for n in sizes[1:]
    ]
    p50_ratio = ratio(load.with_sleepers.p(50), load.without.p(50))
    before, after = (c for c in load.cases if c != load.with_case)
    wb, wa = load.memory[f"worker, {before}"][0], load.memory[f"worker, {load.with_case}"][0]
    figures.append(
        Figure(
            name=f"p50 script-job latency with {load.sleepers} jobs asleep on timers / without",
            value=p50_ratio,
            unit="x",
            goal=None,
            anchor="the same worker with no sleeping jobs, same run: before they start and "
            f"after they are terminated, pooled (p50 {fmt_ms(load.without.p(50))} ms)",
            note=f"p50 before / with / after: {fmt_ms(load.cases[before].p(50))} / "
            f"{fmt_ms(load.with_sleepers.p(50))} / {fmt_ms(load.cases[after].p(50))} ms; p99 "
            f"{ratio(load.with_sleepers.p(99), load.without.p(99)):.2f}x; the worker's PSS "
            f"{wb / 1024:.0f} → {wa / 1024:.0f} MB with the sleepers in its workflow cache",
        )
    )
    details = {
        "args": vars(args),
        "throughput": {"headers": headers, "rows": rows},
        "cpu_ms_per_job": {"headers": cpu_headers, "rows": crows},
        "latency": {"headers": ["case", "jobs", "p50 ms", "p99 ms", "mean ms"], "rows": lrows},
        "latency_phases_ms": {
            c: {k: round(v * 1000, 1) for k, v in ph.items()} for c, ph in load.phases.items()
        },
        "memory_kb": {k: {"pss": p, "rss": r} for k, (p, r) in load.memory.items()},
        "sleepers": {
            "count": load.sleepers,
            "start_s": round(load.start_s, 2),
            "all_asleep_s": round(load.asleep_s, 2),
            "terminate_s": round(load.terminate_s, 2),
            "timer": SLEEP,
        },
    }
    return figures, details


# -- the run -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    # SIGTERM ends the run as Ctrl-C does: the task is cancelled, everything is cleaned up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with temp_dev_server() as (server, root):
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        settings = Settings(
            temporal_address=server.address, data_dir=root / "client", task_queue_prefix=prefix
        )
        script_kind, phased_kind = kind_named("script"), kind_named("phased")
        assert script_kind is not None and phased_kind is not None
        client = await connect(settings)
        jobs = Jobs(client, queue_for(script_kind, settings), queue_for(phased_kind, settings))
        server_pid = server.proc.pid if server.proc else None
        print(f"dev server {server.address}; {machine_summary()}")
        pool = WorkerPool(root, server.address, prefix)
        try:
            t0 = time.perf_counter()
            print("\nthroughput:")
            results = await throughput(args, pool, jobs, server_pid)
            print(f"throughput phase: {time.perf_counter() - t0:.1f}s")
            t0 = time.perf_counter()
            print("\nlatency with sleeping jobs:")
            load = await latency_under_sleepers(args, pool, jobs, server_pid)
            print(f"latency phase: {time.perf_counter() - t0:.1f}s")
        except BaseException:
            pool.close_now()  # also on Ctrl-C, before the server and the temp dir go
            raise
        figures, details = report(args, results, load)
    print()
    print_figures(figures)
    path = record("scale", figures, details=details)
    print(f"recorded in {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=lambda text: sorted({int(n) for n in text.split(",")}),
        default=[1, 2, 4],
        help="worker process counts, comma-separated (the first is the anchor)",
    )
    p.add_argument("--jobs", type=int, default=120, help="throughput jobs per size and round")
    p.add_argument("--concurrency", type=int, default=16, help="jobs in flight (throughput)")
    p.add_argument("--rounds", type=int, default=2, help="passes over 1, 2, 4 (up, then down)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up jobs before each measurement")
    p.add_argument("--latency-jobs", type=int, default=40, help="sequential jobs per case")
    p.add_argument(
        "--latency-warmup", type=int, default=10, help="sequential jobs before each case"
    )
    p.add_argument(
        "--gap", type=float, default=0.1, help="mean idle seconds before each sequential job"
    )
    p.add_argument("--sleepers", type=int, default=1000, help="jobs asleep on 1 h timers")
    p.add_argument("--start-concurrency", type=int, default=32, help="sleeper starts in flight")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the sleepers sleep")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    return bench_main(
        lambda: asyncio.run(run(args)),
        failure=BenchFailed,
        interrupted="workers, dev server and temp dir removed",
        also_interrupts=(asyncio.CancelledError,),
    )


if __name__ == "__main__":
    sys.exit(main())
