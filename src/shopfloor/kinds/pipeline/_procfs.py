"""Reading the process table from /proc: who a process is, and which carry a given marker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), …
    ppid: int
    pgid: int
    sid: int
    starttime: int  # clock ticks after boot: with the pid, names one process for good

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> ProcStat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        starttime=int(fields[19]),
    )


def running(pid: int, starttime: int) -> bool:
    """That very process (not a later one that reused the pid) exists and has not exited."""
    found = stat(pid)
    return found is not None and found.starttime == starttime and not found.exited


def environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def marked(name: str, value: str) -> list[ProcStat]:
    """Live processes whose environment holds NAME=VALUE (their children inherit it)."""
    entry = f"{name}={value}".encode()
    found = []
    for child in PROC.iterdir():
        if not child.name.isdigit() or int(child.name) == os.getpid():
            continue
        pid = int(child.name)
        if environ_has(pid, entry):
            st = stat(pid)
            if st is not None and not st.exited:
                found.append(st)
    return found


def uid_of(pid: int) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
