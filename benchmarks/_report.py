"""The figures a benchmark reports against the performance goals, for `make bench`'s table.

Each benchmark builds `Figure`s (the value measured, the goal, the anchor it is measured
against: a baseline measured in the same run, or an absolute target) and calls `record`, which
writes them to `benchmarks/results/<bench>.json`. `bench_all.py` runs every benchmark, then
reads those files and prints one table. A benchmark never fails on a figure: `met` says
whether the goal was reached, and the exit code only says whether the run itself worked.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its goal, e.g. value=1.7, unit="x", goal=(">=", 2.5)."""

    name: str  # what is measured, in a user's words
    value: float
    unit: str  # "x" (a ratio), "ms", "s", "jobs/s", "MB", ...
    goal: tuple[str, float] | None  # (">=" or "<=", target); None: reported, no goal
    anchor: str  # what the value is measured against
    note: str = ""  # where the cost goes, or what limits it

    @property
    def met(self) -> bool | None:
        if self.goal is None or math.isnan(self.value):
            return None
        op, target = self.goal
        return _COMPARE[op](self.value, target)

    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        op, target = self.goal
        return f"{op} {target:g}{'' if self.unit == 'x' else ' '}{self.unit}"

    def value_text(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        digits = 2 if self.unit == "x" or abs(self.value) < 10 else 1 if self.value < 100 else 0
        return f"{self.value:.{digits}f}{'' if self.unit == 'x' else ' '}{self.unit}"

    def as_json(self) -> dict:
        out = asdict(self)
        out["goal"] = list(self.goal) if self.goal else None
        out["met"] = self.met
        out["value"] = None if math.isnan(self.value) else self.value
        return out


def record(bench: str, figures: list[Figure], *, details: dict | None = None) -> Path:
    """Writes `figures` (and any `details`) as benchmarks/results/<bench>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{bench}.json"
    payload = {
        "bench": bench,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "figures": [f.as_json() for f in figures],
        "details": details or {},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def print_figures(figures: list[Figure]) -> None:
    """The figures as lines a reader of a single benchmark's output can scan."""
    for f in figures:
        met = {True: "met", False: "NOT met", None: ""}[f.met]
        goal = f"  (goal {f.goal_text()}: {met})" if f.goal else ""
        print(f"FIGURE {f.name}: {f.value_text()}{goal} — against {f.anchor}")
