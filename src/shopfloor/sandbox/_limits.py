"""Resource limits for a sandboxed child, and how they are applied inside it."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
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
    # Address space (RLIMIT_AS) the job may add on top of the runtime it starts from: a warm
    # fork counts from the zygote's size at the fork, a cold Python run (`cold_python_argv`,
    # or a runner that calls `limit_address_space`) from its size after its own pre-imports.
    # A program that sets no limit of its own (`run_process` of any argv) gets it as a whole.
    memory_mb: int = 2048
    cpu_s: int | None = None  # CPU seconds (RLIMIT_CPU); None → derived from the wall timeout
    file_size_mb: int = 256  # largest file the child may write (RLIMIT_FSIZE)
    max_processes: int = 64  # processes/threads the child may have at once

    @property
    def effective_cpu_s(self) -> int:
        return self.cpu_s or int(self.wall_timeout_s * 2) + 5


MB = 1024 * 1024


def address_space_bytes() -> int:
    """The address space this process has mapped now (what RLIMIT_AS counts)."""
    return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def limit_address_space(extra_mb: int) -> None:
    """RLIMIT_AS = what this process has mapped now + `extra_mb`: the memory limit of a job,
    applied once its runtime (interpreter, pre-imported libraries) is loaded."""
    limit = address_space_bytes() + extra_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# The start of a cold Python job: no shopfloor import (it would cost start-up time). It limits
# the address space as `limit_address_space` does, then runs the script as `python script.py`
# would: as `__main__`, with its directory first on sys.path.
_COLD_PYTHON = """\
import sys, os, resource
fd = os.open("/proc/self/statm", os.O_RDONLY)
n = int(os.read(fd, 64).split()[0]) * os.sysconf("SC_PAGE_SIZE") + int(sys.argv[1]) * 1048576
os.close(fd)
resource.setrlimit(resource.RLIMIT_AS, (n, n))
del sys.argv[:2]
sys.argv[0] = os.path.abspath(sys.argv[0])
sys.path[0] = os.path.dirname(sys.argv[0])
m = type(sys)("__main__")
m.__file__ = sys.argv[0]
sys.modules["__main__"] = m
with open(sys.argv[0], "rb") as f:
    c = compile(f.read(), sys.argv[0], "exec")
del fd, n, f, m
exec(c, sys.modules["__main__"].__dict__)
"""


def cold_python_argv(script: str, args: list[str], *, memory_mb: int) -> list[str]:
    """A fresh interpreter that runs `script` with `args` and limits its own address space to
    its size after start-up + `memory_mb`. Launch it with `sets_own_memory_limit=True`."""
    return [sys.executable, "-E", "-s", "-u", "-c", _COLD_PYTHON, str(memory_mb), script, *args]


def apply_in_child(limits: Limits, cgroup_procs: Path | None, *, address_space: int | None) -> None:
    """Runs in the forked child before exec (or before user code in a zygote fork).

    `address_space` is the RLIMIT_AS in bytes, or None when the program sets its own once its
    runtime is loaded (`limit_address_space`)."""
    if cgroup_procs is not None:
        cgroup_procs.write_text("0")  # "0" moves the writing process itself
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    cpu = limits.effective_cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    fsize = limits.file_size_mb * MB
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
