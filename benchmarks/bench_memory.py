"""Memory of an idle `shopfloor up`: every kind's worker ready vs only script and simulation.

What is compared (same machine, same run, one stack after the other):

* all kinds: `shopfloor up` as a user runs it (the CLI, one worker, every kind of the registry),
  in a temp data dir on free ports;
* script + simulation: the same, with `SHOPFLOOR_WORKER_KINDS='["script","simulation"]'`, so
  the difference is what the three newer kinds (agent, phased + poetry-research, pipeline) add.

Each stack is measured once it is ready and idle: the controller answers, the worker said
"worker ready", its zygotes are up (the warm one, with build123d in its argv, when simulations
are served), and the process tree has not changed for `--stable` seconds; then `--settle`
seconds more. Memory is PSS (proportional set size, /proc/<pid>/smaps_rollup) summed over the
whole tree of `up` — supervisor, dev server, controller, worker, zygotes: pages shared between
processes (libpython, the zygotes' copy-on-write heap) are split between them, so the sum is
what the stack really costs. RSS is shown beside it (it counts shared pages once per process).
The median of `--samples` snapshots, a second apart, is reported.

The stack is stopped as `shopfloor down` does (SIGTERM to `up`, which stops its parts in
order); the benchmark checks that every process of the tree is gone (and kills any that is
not, saying so) and removes its temp dir. It measures, it does not assert: exit 0 unless a
stack fails to start.

    .venv/bin/python benchmarks/bench_memory.py [--settle 5] [--samples 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import bench_main, machine_summary, print_table
from _procs import (
    StackFailed,
    argv_of,
    clean_env,
    descendants,
    memory_of,
    remove_work_roots,
    shopfloor_cli,
    start_time,
)
from _report import Figure, print_figures, record

from shopfloor.processes import die_with_parent, free_port, stop_process

MB = 1024 * 1024
ONLY_OLD_KINDS = ["script", "simulation"]
# Rows of the per-part table, in this order.
PARTS = (
    "supervisor (up)",
    "dev server",
    "controller",
    "worker",
    "cold zygote",
    "warm zygote",
    "light zygote",
    "other",
)


# -- the process tree and its memory ---------------------------------------------------------


def largest_mappings(pid: int, n: int = 8) -> list[tuple[str, int]]:
    """The `n` largest PSS holders of a process (kB), by mapped file (anonymous memory as
    "[anon]", the heap as "[heap]"), from /proc/<pid>/smaps: where its memory goes."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return []
    by_name: dict[str, int] = {}
    name = "[anon]"
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            path = head[5].strip() if len(head) == 6 else ""
            # A library is its file, wherever it lives; anonymous memory is one bucket.
            name = Path(path).name if path.startswith("/") else (path or "[anon]")
        elif line.startswith("Pss:"):
            by_name[name] = by_name.get(name, 0) + int(line.split()[1])
    return sorted(by_name.items(), key=lambda kv: -kv[1])[:n]


_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63
_MAX_VMA = 64 << 30  # larger mappings are address-space reservations, not memory: skipped


def resident_once_kb(pids: list[int]) -> int | None:
    """The physical pages resident in any of `pids`, each counted once (kB): what the tree
    holds whoever else maps the same files. PSS splits a page mapped by an outside process
    too (another dev server's binary, another venv python's libraries), so it depends on what
    else runs; this does not. Needs root (page frame numbers); None without them."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    frames = []
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            pagemap = open(f"/proc/{pid}/pagemap", "rb")  # noqa: SIM115 - closed below
        except OSError:
            continue
        with pagemap:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
                if hi - lo > _MAX_VMA:
                    continue
                try:
                    pagemap.seek(lo // page * 8)
                    data = pagemap.read((hi - lo) // page * 8)
                except OSError:
                    continue  # [vsyscall] and the like
                entries = np.frombuffer(data, dtype=np.uint64)
                present = entries[(entries & np.uint64(_PRESENT)) != 0] & np.uint64(_PFN_MASK)
                frames.append(present[present != 0])
    if not frames:
        return None
    unique = np.unique(np.concatenate(frames))
    return None if unique.size == 0 else int(unique.size) * page // 1024


def part_of(pid: int, root: int, argv: list[str]) -> str:
    """Which part of the stack a process of `up`'s tree is, from its argv."""
    if pid == root:
        return "supervisor (up)"
    if "start-dev" in argv and any(Path(a).name == "temporal" for a in argv[:1]):
        return "dev server"
    if "shopfloor" in argv and "-m" in argv:
        command = argv[argv.index("shopfloor") + 1 :][:1]
        if command == ["controller"]:
            return "controller"
        if command == ["worker"]:
            return "worker"
    if "shopfloor.sandbox.zygote_main" in argv:
        # argv: … -m shopfloor.sandbox.zygote_main <fd> <options json> <modules…>
        modules = argv[argv.index("shopfloor.sandbox.zygote_main") + 3 :]
        if not modules:
            return "cold zygote"
        # The light zygote (simulations from cached parts) is the warm one without build123d.
        return "warm zygote" if "build123d" in modules else "light zygote"
    return "other"


@dataclass
class Snapshot:
    """One look at the whole tree: per part, processes and summed memory (kB)."""

    parts: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # "pid (part)" whose memory was hidden
    others: list[str] = field(default_factory=list)  # argv of processes counted as "other"
    pids: dict[str, list[int]] = field(default_factory=dict)
    resident_once: int | None = None  # kB, see resident_once_kb

    @property
    def total_pss(self) -> int:
        return sum(p["pss"] for p in self.parts.values())

    @property
    def total_rss(self) -> int:
        return sum(p["rss"] for p in self.parts.values())


def snapshot(root: int) -> Snapshot:
    snap = Snapshot()
    for pid in descendants(root):
        argv = argv_of(pid)
        part = part_of(pid, root, argv)
        mem = memory_of(pid)
        if mem is None:
            if start_time(pid) is not None:
                snap.unreadable.append(f"{pid} ({part})")
            continue
        row = snap.parts.setdefault(
            part, {"processes": 0, "pss": 0, "pss_anon": 0, "pss_file": 0, "rss": 0}
        )
        row["processes"] += 1
        snap.pids.setdefault(part, []).append(pid)
        row["pss"] += mem.pss
        row["pss_anon"] += mem.pss_anon
        row["pss_file"] += mem.pss_file
        row["rss"] += mem.rss
        if part == "other":
            snap.others.append(" ".join(argv)[:160])
    snap.resident_once = resident_once_kb([p for ps in snap.pids.values() for p in ps])
    return snap


# -- one stack ---------------------------------------------------------------------------------


@dataclass
class RunningStack:
    label: str
    proc: subprocess.Popen
    data_dir: Path
    log: Path
    controller_url: str
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, every one we saw

    def remember(self) -> list[int]:
        pids = descendants(self.proc.pid)
        for pid in pids:
            started = start_time(pid)
            if started is not None:
                self.seen.setdefault(pid, started)
        return pids

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def shopfloor_up(label: str, root: Path, kinds: list[str] | None) -> Iterator[RunningStack]:
    """`shopfloor up` in `root/<label>` on free ports, stopped as `shopfloor down` does.

    The tree is remembered while it runs; on the way out, whatever of it outlived `up` is
    killed (and reported on stderr), so nothing is left behind even after an error."""
    data_dir = root / label
    data_dir.mkdir()
    controller_port = free_port()
    settings = {
        "data_dir": str(data_dir),
        "dev_server_port": str(free_port()),
        "dev_ui_port": str(free_port()),
        "controller_port": str(controller_port),
        "controller_host": "127.0.0.1",
        "worker_metrics_port": "0",
    }
    if kinds:
        settings["worker_kinds"] = json.dumps(kinds)  # pydantic-settings reads lists as JSON
    log = data_dir / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [shopfloor_cli(), "up"],
            cwd=data_dir,  # no stray .env of the caller's directory
            env=clean_env(**settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
            preexec_fn=die_with_parent(),  # and it stops if we are killed
        )
    stack = RunningStack(label, proc, data_dir, log, f"http://127.0.0.1:{controller_port}")
    try:
        stack.remember()
        yield stack
    finally:
        stack.remember()
        t0 = time.perf_counter()
        stop_process(proc, timeout_s=60)  # `shopfloor down`: SIGTERM, then wait (60 s)
        stop_s = time.perf_counter() - t0
        left = [
            pid
            for pid, started in stack.seen.items()
            if pid != proc.pid and start_time(pid) == started
        ]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            print(
                f"  WARNING {label}: {len(left)} process(es) outlived `up` and were killed: "
                f"{', '.join(' '.join(argv_of(p))[:80] or str(p) for p in left)}",
                file=sys.stderr,
            )
        print(f"  stopped in {stop_s:.1f}s (SIGTERM to up); processes left over: {len(left)}")
        remove_work_roots(stack.seen)


def wait_idle(stack: RunningStack, *, warm: bool, stable_s: float, timeout_s: float) -> float:
    """Until the stack is ready and idle; returns the seconds it took from `up`'s start."""
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    healthy = False
    last_tree: tuple[tuple[int, str], ...] = ()
    stable_since = time.perf_counter()
    while time.perf_counter() < deadline:
        if stack.proc.poll() is not None:
            raise StackFailed(
                f"{stack.label}: `shopfloor up` exited ({stack.proc.returncode}):\n"
                + stack.log_tail()
            )
        if not healthy:
            try:
                healthy = httpx.get(f"{stack.controller_url}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                pass
        pids = stack.remember()
        tree = tuple((pid, part_of(pid, stack.proc.pid, argv_of(pid))) for pid in pids)
        if tree != last_tree:
            last_tree, stable_since = tree, time.perf_counter()
        parts = {part for _, part in tree}
        worker_ready = "worker ready" in stack.log.read_text(errors="replace")
        zygotes = "cold zygote" in parts and (not warm or "warm zygote" in parts)
        if healthy and worker_ready and zygotes and time.perf_counter() - stable_since >= stable_s:
            return time.perf_counter() - t0
        time.sleep(0.25)
    raise StackFailed(
        f"{stack.label}: not ready and idle after {timeout_s:g}s (controller healthy: "
        f"{healthy}; parts: {sorted({p for _, p in last_tree})}):\n" + stack.log_tail()
    )


@dataclass
class Measured:
    """One stack, measured once: the median of its snapshots."""

    label: str
    kinds: str
    round: int
    ready_s: float
    snap: Snapshot
    samples_mb: list[float]
    worker_ready: str  # the worker's own "worker ready" line: its kinds and task queues
    warm_mappings: list[tuple[str, int]]  # the warm zygote's largest PSS holders (kB)


def measure_stack(
    label: str, root: Path, kinds: list[str] | None, round_: int, args: argparse.Namespace
) -> Measured:
    served = kinds or []
    warm = not served or "simulation" in served
    name = f"{label}, round {round_}"
    print(f"\n{name}: starting `shopfloor up`" + (f" with kinds {served}" if served else ""))
    with shopfloor_up(f"{label.replace(' ', '-')}-{round_}", root, kinds) as stack:
        ready_s = wait_idle(stack, warm=warm, stable_s=args.stable, timeout_s=args.timeout)
        print(f"  ready and idle after {ready_s:.1f}s; settling {args.settle:g}s")
        time.sleep(args.settle)
        snaps = []
        for i in range(args.samples):
            if i:
                time.sleep(1.0)
            snaps.append(snapshot(stack.proc.pid))
        warm_pids = snaps[-1].pids.get("warm zygote", [])
        mappings = largest_mappings(warm_pids[0]) if warm_pids else []
        stack.remember()
        lines = stack.log.read_text(errors="replace").splitlines()
        line = next((ln for ln in lines if "worker ready" in ln), "")
    totals = [s.total_pss / 1024 for s in snaps]
    median = sorted(snaps, key=lambda s: s.total_pss)[len(snaps) // 2]
    print(f"  total PSS {median.total_pss / 1024:.1f} MB")
    return Measured(
        label, ", ".join(served) or "all", round_, ready_s, median, totals, line, mappings
    )


def mean_snapshot(snaps: list[Snapshot]) -> Snapshot:
    """Per part and field, the mean over the stacks of one configuration."""
    out = Snapshot()
    for part in PARTS:
        rows = [s.parts[part] for s in snaps if part in s.parts]
        if rows:
            out.parts[part] = {k: round(statistics.fmean(r[k] for r in rows)) for k in rows[0]}
    out.unreadable = sorted({u for s in snaps for u in s.unreadable})
    out.others = sorted({o for s in snaps for o in s.others})
    once = [s.resident_once for s in snaps if s.resident_once is not None]
    out.resident_once = round(statistics.fmean(once)) if once else None
    return out


# -- the run -----------------------------------------------------------------------------------


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def print_config(label: str, runs: list[Measured]) -> None:
    snap = mean_snapshot([m.snap for m in runs])
    rows = []
    for part in PARTS:
        row = snap.parts.get(part)
        if row is None:
            continue
        rows.append(
            [
                part,
                str(row["processes"]),
                mb(row["pss"]),
                mb(row["pss_anon"]),
                mb(row["pss_file"]),
                mb(row["rss"]),
            ]
        )
    procs = sum(r["processes"] for r in snap.parts.values())
    anon = sum(r["pss_anon"] for r in snap.parts.values())
    file_ = sum(r["pss_file"] for r in snap.parts.values())
    rows.append(["total", str(procs), mb(snap.total_pss), mb(anon), mb(file_), mb(snap.total_rss)])
    print_table(
        ["part", "procs", "PSS MB", "of it anon", "of it file", "RSS MB"],
        rows,
        title=f"{label} (kinds: {runs[0].kinds}), idle, mean of {len(runs)} stack(s); "
        "total PSS per stack: " + ", ".join(f"{m.snap.total_pss / 1024:.1f}" for m in runs) + " MB",
    )
    if snap.resident_once is not None:
        print(
            f"  resident pages of the stack, each counted once (pagemap): "
            f"{mb(snap.resident_once)} MB; PSS is {mb(snap.resident_once - snap.total_pss)} MB "
            "less because processes outside the stack map some of the same pages"
        )
    if snap.unreadable:
        print(f"  memory not readable (not root?): {', '.join(snap.unreadable)}")
    for argv in snap.others:
        print(f"  other: {argv}")
    print(f"  worker: {_ready_summary(runs[0].worker_ready)}")
    if runs[0].warm_mappings:
        print(
            "  warm zygote's largest PSS holders: "
            + ", ".join(f"{name} {kb / 1024:.0f}" for name, kb in runs[0].warm_mappings)
            + " MB"
        )


def _ready_summary(line: str) -> str:
    """The part of the worker's "worker ready" log line that names its kinds and queues."""
    return line[line.index("worker ready") :] if "worker ready" in line else "(no ready line)"


def print_difference(full: Snapshot, old: Snapshot) -> None:
    rows = []
    for part in PARTS:
        a, b = full.parts.get(part, {}).get("pss", 0), old.parts.get(part, {}).get("pss", 0)
        if a or b:
            rows.append([part, mb(a), mb(b), mb(a - b)])
    a, b = full.total_pss, old.total_pss
    rows.append(["total", mb(a), mb(b), mb(a - b)])
    print_table(
        ["part", "all kinds", "script+simulation", "added"],
        rows,
        title="PSS MB by part (means): what agent + phased/poetry-research + pipeline add",
    )


def figures_for(full: Snapshot, old: Snapshot, spread_mb: float) -> list[Figure]:
    def pss(snap: Snapshot, part: str) -> float:
        return snap.parts.get(part, {}).get("pss", 0) / 1024

    biggest = max(PARTS, key=lambda part: pss(full, part))
    return [
        Figure(
            name="idle shopfloor up, every kind: total PSS",
            value=full.total_pss / 1024,
            unit="MB",
            goal=("<=", 800),
            anchor="absolute target; idle shopfloor up, every kind",
            note=f"largest part: {biggest} {pss(full, biggest):.0f} MB (build123d/OCP, mujoco "
            f"and a GL context, imported once so scripts fork warm); dev server "
            f"{pss(full, 'dev server'):.0f} MB, worker {pss(full, 'worker'):.0f} MB, "
            f"controller {pss(full, 'controller'):.0f} MB, up itself "
            f"{pss(full, 'supervisor (up)'):.0f} MB"
            + (
                f"; each resident page counted once: {full.resident_once / 1024:.0f} MB"
                if full.resident_once
                else ""
            ),
        ),
        Figure(
            name="added by agent + phased + pipeline kinds (PSS)",
            value=(full.total_pss - old.total_pss) / 1024,
            unit="MB",
            goal=("<=", 50),
            anchor="the same stack with only script and simulation kinds, same run",
            note=f"worker {pss(full, 'worker') - pss(old, 'worker'):+.1f} MB, dev server "
            f"{pss(full, 'dev server') - pss(old, 'dev server'):+.1f} MB (more task queues "
            f"polled); the stacks of one configuration differ by up to {spread_mb:.1f} MB",
        ),
    ]


def details_for(runs: list[Measured]) -> dict:
    return {
        "stacks": [
            {
                "label": m.label,
                "kinds": m.kinds,
                "round": m.round,
                "ready_s": round(m.ready_s, 1),
                "pss_samples_mb": [round(t, 1) for t in m.samples_mb],
                "total_pss_mb": round(m.snap.total_pss / 1024, 1),
                "total_rss_mb": round(m.snap.total_rss / 1024, 1),
                "resident_once_mb": (
                    round(m.snap.resident_once / 1024, 1) if m.snap.resident_once else None
                ),
                "parts_kb": m.snap.parts,
                "others": m.snap.others,
                "unreadable": m.snap.unreadable,
                "worker_ready": _ready_summary(m.worker_ready),
                "warm_zygote_largest_kb": dict(m.warm_mappings),
            }
            for m in runs
        ]
    }


CONFIGS: dict[str, list[str] | None] = {"all kinds": None, "script+simulation": ONLY_OLD_KINDS}


def run(args: argparse.Namespace) -> list[Figure]:
    print(f"{machine_summary()}; running as uid {os.getuid()}")
    if os.getuid() != 0:
        print("  not root: workers make themselves undumpable, so their memory may be hidden")
    runs: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-mem-") as tmp:
        root = Path(tmp)
        for r in range(1, args.rounds + 1):
            # ABBA: all, old, old, all…, so drift over the run hits both alike.
            order = list(CONFIGS) if r % 2 else list(reversed(CONFIGS))
            for label in order:
                runs.append(measure_stack(label, root, CONFIGS[label], r, args))
    by_config = {label: [m for m in runs if m.label == label] for label in CONFIGS}
    for label, measured in by_config.items():
        print_config(label, measured)
    full = mean_snapshot([m.snap for m in by_config["all kinds"]])
    old = mean_snapshot([m.snap for m in by_config["script+simulation"]])
    print_difference(full, old)
    spread = max(
        max(m.snap.total_pss for m in ms) / 1024 - min(m.snap.total_pss for m in ms) / 1024
        for ms in by_config.values()
    )
    figures = figures_for(full, old, spread)
    print()
    print_figures(figures)
    path = record("memory", figures, details=details_for(runs))
    print(f"recorded in {path}")
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring")
    p.add_argument(
        "--stable", type=float, default=3.0, help="seconds the process tree must not change"
    )
    p.add_argument("--samples", type=int, default=3, help="snapshots a second apart (median)")
    p.add_argument("--rounds", type=int, default=3, help="stacks per configuration, in ABBA… order")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds a stack may take")
    return p.parse_args(argv)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: stacks stopped, temp dir gone


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    return bench_main(
        lambda: run(args), failure=StackFailed, interrupted="stacks stopped, temp dir removed"
    )


if __name__ == "__main__":
    sys.exit(main())
