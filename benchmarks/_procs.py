"""What the benchmarks that start real `shopfloor` processes share: the process tree under a
pid (from /proc), each process's memory, and a clean environment for the stack they start."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


class StackFailed(RuntimeError):
    pass


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after "pid (comm)": state, ppid, …; None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process
    (pids are reused)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (children of children…), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return sorted(found)


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass(frozen=True)
class ProcMemory:
    """kB, as smaps_rollup gives them; None where it could not be read (a process of another
    user, or one that made itself undumpable while we are not root)."""

    rss: int
    pss: int
    pss_anon: int
    pss_file: int


def memory_of(pid: int) -> ProcMemory | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    return ProcMemory(
        rss=values.get("Rss", 0),
        pss=values.get("Pss", 0),
        pss_anon=values.get("Pss_Anon", 0),
        pss_file=values.get("Pss_File", 0),
    )


def clean_env(**shopfloor: str) -> dict[str, str]:
    """This environment without any SHOPFLOOR_* of the caller's (a measured stack must not
    pick up someone's ports, kinds or S3 store), plus `shopfloor` as SHOPFLOOR_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPFLOOR_")}
    env.update({f"SHOPFLOOR_{k.upper()}": v for k, v in shopfloor.items()})
    return env


def shopfloor_cli() -> str:
    """The `shopfloor` console script of this venv."""
    beside = Path(sys.executable).parent / "shopfloor"
    if not beside.exists():
        raise StackFailed(f"{beside} not found: run `make setup` (or use the project's venv)")
    return str(beside)


def remove_work_roots(pids: dict[int, int]) -> None:
    """A worker removes its sandbox work root (`<tmp>/shopfloor-w<pid>-<boot>`) when it
    stops; one that was killed cannot. Remove ours if any is left."""
    import shutil

    base = Path(tempfile.gettempdir())
    for pid in pids:
        for leftover in base.glob(f"shopfloor-w{pid}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
