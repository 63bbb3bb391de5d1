"""Helpers shared by the benchmarks: a throw-away dev server, load drivers, statistics, tables.

Benchmarks are run as scripts (`python benchmarks/bench_x.py`), so this module is imported as a
top-level `_common` from the benchmark's own directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from shopfloor.devserver import DevServer, temporal_binary, wait_for_port
from shopfloor.processes import die_with_parent, free_port, stop_process
from shopfloor.registry import JobKind, queue_for
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from shopfloor.worker import build_workers, kind_resources, select_kinds


@contextmanager
def temp_dev_server() -> Iterator[tuple[DevServer, Path]]:
    """A dev server on free ports whose SQLite file (and anything else) lives in a temp dir.

    Yields the server and the temp dir, so callers can put their own data (artifacts) next to
    it and have it all removed together.
    """
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-") as tmp:
        root = Path(tmp)
        server = DevServer(data_dir=root / "temporal", port=free_port(), ui_port=free_port())
        server.start(preexec_fn=die_with_parent())  # a killed benchmark leaves no server
        try:
            yield server, root
        finally:
            server.stop()


@dataclass
class InProcessWorker:
    """A temp dev server with one kind's workers in this process, as `shopfloor worker`
    builds them (`kind_resources` + `build_workers`)."""

    server: DevServer
    root: Path  # the temp dir: the server's data and the worker's data dir
    settings: Settings
    client: Client
    kind: JobKind
    queue: str
    plans: dict  # task queue → the worker plan (`kind_resources`)


@asynccontextmanager
async def in_process_worker(kind: str) -> AsyncIterator[InProcessWorker]:
    with temp_dev_server() as (server, root):
        settings = Settings(
            temporal_address=server.address,
            data_dir=root,
            task_queue_prefix=f"bench-{uuid.uuid4().hex[:6]}-",
        )
        client = await connect(settings)
        served = select_kinds([kind])
        queue = queue_for(served[0], settings)
        async with contextlib.AsyncExitStack() as stack:
            plans = await stack.enter_async_context(kind_resources(settings, served))
            for w in build_workers(client, settings, plans):
                await stack.enter_async_context(w)
            yield InProcessWorker(server, root, settings, client, served[0], queue, plans)


@contextmanager
def temp_plain_dev_server() -> Iterator[tuple[int, str]]:
    """`temporal server start-dev --db-filename F` as its docs give it (SQLite file, default
    pragmas: no WAL): the anchor "the SDK's defaults on plain start-dev". Yields (pid, address)."""
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-plain-") as tmp:
        port = free_port()
        argv = [
            temporal_binary(), "server", "start-dev", "--db-filename", f"{tmp}/temporal.db",
            "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(free_port()),
            "--log-level", "error",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        try:
            wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc)
            yield proc.pid, f"127.0.0.1:{port}"
        finally:
            stop_process(proc, timeout_s=10)


# -- CPU accounting ------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU seconds (user + system) of this process, its reaped children (the
    scripts jobs ran) and the dev server process."""

    this_process: float
    children: float
    server: float

    @classmethod
    def now(cls, server_pid: int | None) -> CpuTimes:
        t = os.times()
        # Scripts may be reaped by a live helper process (shopfloor's launcher zygote) rather
        # than by us: count such helpers and what they reaped as "children" too.
        helpers = sum(
            _proc_cpu(pid, with_reaped=True) for pid in _live_children() if pid != server_pid
        )
        return cls(
            t.user + t.system,
            t.children_user + t.children_system + helpers,
            _proc_cpu(server_pid),
        )

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.this_process - other.this_process,
            self.children - other.children,
            self.server - other.server,
        )

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.this_process + other.this_process,
            self.children + other.children,
            self.server + other.server,
        )

    @property
    def total(self) -> float:
        return self.this_process + self.children + self.server


ZERO_CPU = CpuTimes(0.0, 0.0, 0.0)


def _proc_cpu(pid: int | None, *, with_reaped: bool = False) -> float:
    """utime + stime of a live process from /proc (Linux), 0 where that is not available;
    with_reaped adds the CPU of the children it has waited for (cutime + cstime)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after "pid (comm)": utime, stime, cutime, cstime are 0-based 11, 12, 13, 14.
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _live_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linearly interpolated between closest ranks (as numpy's
    default), so p99 of a small sample is not just its maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass
class Samples:
    """Latencies (seconds) and, for throughput runs, the wall time they were measured over."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu: CpuTimes | None = None  # CPU spent while these were measured, where recorded

    def extend(self, other: Samples) -> None:
        self.latencies += other.latencies
        self.wall_s += other.wall_s
        if other.cpu is not None:
            self.cpu = other.cpu if self.cpu is None else self.cpu + other.cpu

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) if self.latencies else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


# -- load drivers --------------------------------------------------------------------------


async def run_sequential(n: int, job: Callable[[], Awaitable[object]]) -> Samples:
    """`n` jobs one after another; each latency is submit → result."""
    out = Samples()
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await job()
        out.latencies.append(time.perf_counter() - t0)
    out.wall_s = time.perf_counter() - started
    return out


async def run_bounded(n: int, concurrency: int, job: Callable[[], Awaitable[object]]) -> Samples:
    """`n` jobs with at most `concurrency` in flight (a new one starts as soon as one ends).

    A fixed pool of `concurrency` loops rather than `n` tasks behind a semaphore: the offered
    load is exactly `concurrency` at all times, and the client does not spend its (shared)
    CPU on thousands of parked tasks.
    """
    out = Samples()
    remaining = n

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await job()
            out.latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, n))))
    out.wall_s = time.perf_counter() - started
    return out


# -- where the time goes: server-side phases from a workflow's history ----------------------

# Phases of a one-activity workflow, in order, each ending at the named event (the first
# occurrence after the previous phase's end). Durations come from the server's own event
# timestamps, so they need no instrumentation in the worker.
PHASES: tuple[tuple[str, int], ...] = (
    ("wft1 sched→start", EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED),
    ("wft1 run", EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
    ("act sched→start", EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED),
    ("act run", EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED),
    ("wft2 sched→start", EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED),
    ("wft2 run→closed", EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED),
)


@dataclass
class Timeline:
    """Server-side phase durations of one run plus its start time and close time (epoch s)."""

    phases: dict[str, float]
    started_at: float
    closed_at: float


async def timeline(handle: WorkflowHandle) -> Timeline:
    events = (await handle.fetch_history()).events
    times: list[tuple[int, datetime]] = [(e.event_type, e.event_time.ToDatetime()) for e in events]
    started_at = times[0][1].timestamp()
    phases: dict[str, float] = {}
    prev = started_at
    i = 1
    for name, wanted in PHASES:
        while i < len(times) and times[i][0] != wanted:
            i += 1
        if i == len(times):
            break  # an unexpected shape (a retry, a failure): report what we have
        t = times[i][1].timestamp()
        phases[name] = t - prev
        prev = t
        i += 1
    return Timeline(phases=phases, started_at=started_at, closed_at=times[-1][1].timestamp())


# -- profiling -----------------------------------------------------------------------------


class AllThreadsProfile:
    """cProfile of every Python thread of this process, not just the calling one.

    Temporal runs workflow code on a thread pool and sync activities on their executor, which
    `cProfile` alone (one thread) would not see. Threads started while this is active get a
    profiler of their own on their first profiled event; the results are merged. Threads that
    already exist (other than the caller) are not covered, so enter this before the workers
    start. Python 3.11 has no `threading.setprofile_all_threads`.
    """

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_this_thread(self, *_: object) -> None:
        profile = cProfile.Profile()
        with self._lock:
            self._profiles.append(profile)
        profile.enable()  # replaces this bootstrap hook for the thread

    def __enter__(self) -> AllThreadsProfile:
        threading.setprofile(self._start_in_this_thread)
        self._start_in_this_thread()
        return self

    def __exit__(self, *_: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget what was recorded so far (e.g. the warm-up); keep profiling."""
        with self._lock:
            for profile in self._profiles:
                profile.clear()

    def stats(self) -> pstats.Stats | None:
        """The merged statistics; None if nothing was recorded."""
        with self._lock:
            profiles = list(self._profiles)
        # create_stats() disables only the calling thread's profiler; the others' counts are
        # snapshotted as they stand. Threads that recorded nothing are left out (pstats refuses
        # empty profiles).
        merged: pstats.Stats | None = None
        for profile in profiles:
            profile.create_stats()
            if not profile.stats:  # type: ignore[attr-defined]
                continue
            if merged is None:
                merged = pstats.Stats(profile)
            else:
                merged.add(profile)  # type: ignore[arg-type]
        return merged


# -- output --------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str = "") -> None:
    """A plain, aligned text table (first column left-aligned, the rest right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts)

    if title:
        print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def machine_summary() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"


def bench_main(
    run: Callable[[], object],
    *,
    failure: type[Exception],
    interrupted: str,
    also_interrupts: tuple[type[BaseException], ...] = (),
) -> int:
    """A benchmark's `main`: runs it, prints how long it took; `failure` (the stack failed to
    come up, a job failed) is an error line and exit 1, Ctrl-C says what was cleaned up."""
    t0 = time.perf_counter()
    try:
        run()
    except failure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, *also_interrupts):
        print(f"\ninterrupted: {interrupted}", file=sys.stderr)
        return 130
    print(f"\nbenchmark took {time.perf_counter() - t0:.1f}s")
    return 0
