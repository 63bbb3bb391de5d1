"""`make bench`: every benchmark in turn, then one table of the performance goals.

Each benchmark runs in its own process, one after another (on a 2-core machine two at once
would measure each other), and records its figures in benchmarks/results/<bench>.json
(`_report.record`). This script then prints every figure beside its goal and the anchor it
is measured against, and writes the table to benchmarks/results/summary.json. It measures,
never asserts: it exits non-zero only when a benchmark itself failed to run.

    .venv/bin/python benchmarks/bench_all.py [--only scripts,simulation] [--table-only] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import print_table
from _report import RESULTS, machine

HERE = Path(__file__).resolve().parent
# In the order of the goals: scripts, simulation, sweep, memory, scale.
BENCHMARKS = {
    "scripts": ["bench_scripts.py"],
    "simulation": ["bench_simulation.py"],
    "sweep": ["bench_sweep.py"],
    "memory": ["bench_memory.py"],
    "scale": ["bench_scale.py"],
}


def run_benchmarks(names: list[str]) -> dict[str, str]:
    """Runs each benchmark (its own output streams through); returns those that failed."""
    failed = {}
    for name in names:
        argv = [sys.executable, str(HERE / BENCHMARKS[name][0]), *BENCHMARKS[name][1:]]
        print(f"\n=== {name}: {' '.join(Path(a).name for a in argv[1:])}", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=HERE.parent)
        took = time.perf_counter() - t0
        print(f"=== {name}: exit {done.returncode} after {took:.0f} s", flush=True)
        if done.returncode != 0:
            failed[name] = f"exit code {done.returncode}"
    return failed


def cpu_speed_probe() -> float:
    """Seconds for 10 million iterations of a pure-Python loop: how fast this (virtual)
    machine is at the moment. The absolute figures move with it (the development VM changed
    ~2x within an hour while idle); the ratios, measured side by side, much less."""
    t = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return round(time.perf_counter() - t, 3)


def summary(names: list[str], failed: dict[str, str]) -> dict:
    rows = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if name in failed or not path.exists():
            rows.append({"bench": name, "missing": failed.get(name, "no results recorded")})
            continue
        recorded = json.loads(path.read_text())
        for figure in recorded["figures"]:
            rows.append({"bench": name, "measured_at": recorded["measured_at"], **figure})
    return {"machine": machine(), "figures": rows}


def print_summary(table: dict) -> None:
    rows = []
    for f in table["figures"]:
        if "missing" in f:
            rows.append([f["bench"], "(not measured)", "-", "-", f["missing"]])
            continue
        rows.append(
            [
                f["name"],
                _value(f),
                _goal(f),
                {True: "yes", False: "NO", None: "-"}[f["met"]],
                f["anchor"],
            ]
        )
    print_table(
        ["figure", "measured", "goal", "met", "measured against"],
        rows,
        title="Performance goals (issue 13), measured on this machine in this run",
    )
    notes = [f"- {f['name']}: {f['note']}" for f in table["figures"] if f.get("note")]
    if notes:
        print("\nWhere it goes:")
        print("\n".join(notes))
    speed = table.get("machine", {}).get("python_loop_s")
    if speed:
        print(
            f"\nThe machine's speed (10M-iteration Python loop, `cpu_speed_probe`): "
            f"{speed['before']} s before, {speed['after']} s after"
        )


def print_markdown(table: dict) -> None:
    """The table as Markdown, as the README quotes it."""
    print("| figure | measured | goal | met | measured against |")
    print("|---|---|---|---|---|")
    for f in table["figures"]:
        if "missing" in f:
            print(f"| {f['bench']} | not measured | - | - | {f['missing']} |")
            continue
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        print(f"| {f['name']} | {_value(f)} | {_goal(f)} | {met} | {f['anchor']} |")


def _unit(value: str, unit: str) -> str:
    return f"{value}{unit}" if unit == "x" else f"{value} {unit}"


def _value(f: dict) -> str:
    if f["value"] is None:
        return "n/a"
    v = f["value"]
    digits = 2 if f["unit"] == "x" or abs(v) < 10 else 1 if abs(v) < 100 else 0
    return _unit(f"{v:.{digits}f}", f["unit"])


def _goal(f: dict) -> str:
    if not f["goal"]:
        return "-"
    op, target = f["goal"]
    return f"{op} {_unit(f'{target:g}', f['unit'])}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of the recorded results"
    )
    parser.add_argument("--markdown", action="store_true", help="the table as Markdown too")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    t0 = time.perf_counter()
    speed = [] if args.table_only else [cpu_speed_probe()]
    failed = {} if args.table_only else run_benchmarks(names)
    table = summary(names, failed)
    if not args.table_only:
        speed.append(cpu_speed_probe())
        table["machine"]["python_loop_s"] = {"before": speed[0], "after": speed[1]}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    print_summary(table)
    if args.markdown:
        print()
        print_markdown(table)
    if not args.table_only:
        print(f"\nwritten to {RESULTS / 'summary.json'}; all benchmarks took "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
