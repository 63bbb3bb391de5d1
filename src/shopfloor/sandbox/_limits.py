"""Resource limits for a sandboxed child, and how they are applied inside it."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)  # loaded up front: nothing heavy may run after fork

# A writable cgroup-v1 pids hierarchy lets us cap processes even for root (RLIMIT_NPROC does
# not apply to uid 0) and find every descendant, including ones that left the process group.
PIDS_CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


@dataclass(frozen=True, kw_only=True)
class Limits:
    wall_timeout_s: float = 60.0
    memory_mb: int = 2048  # address space (RLIMIT_AS)
    cpu_s: int | None = None  # CPU seconds (RLIMIT_CPU); None → derived from the wall timeout
    file_size_mb: int = 256  # largest file the child may write (RLIMIT_FSIZE)
    max_processes: int = 64  # processes/threads the child may have at once

    @property
    def effective_cpu_s(self) -> int:
        return self.cpu_s or int(self.wall_timeout_s * 2) + 5


def apply_in_child(limits: Limits, cgroup_procs: Path | None) -> None:
    """Runs in the forked child before exec (or before user code in a zygote fork)."""
    if cgroup_procs is not None:
        cgroup_procs.write_text("0")  # "0" moves the writing process itself
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    cpu = limits.effective_cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    fsize = limits.file_size_mb * mb
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:
        # Without a cgroup this is the only process cap; it counts all of the user's processes.
        cap = limits.max_processes + _processes_of_current_user()
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
    set_parent_death_signal()


def set_parent_death_signal() -> None:
    """Die with the parent: a SIGKILLed worker must not leave scripts running that a retry on
    another worker would duplicate."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _processes_of_current_user() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def protect_from_same_user() -> None:
    """Makes this process's memory and /proc/<pid>/environ unreadable to other processes of
    the same (non-root) user — such as the scripts it runs, which could otherwise read the
    worker's API keys there. Root-run scripts are not stopped by this; see the README."""
    _libc.prctl(_PR_SET_DUMPABLE, 0)
