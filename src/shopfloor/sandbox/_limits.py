"""Resource limits and identity of a sandboxed child, and how they are applied inside it."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shopfloor.sandbox._cgroup import PIDS_CGROUP_ROOT
from shopfloor.sandbox._contain import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    ContainmentFailed,
    RunRoot,
    drop_privileges,
    last_capability,
    refuse_new_namespaces,
    seccomp_available,
    unshare,
)

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_LAST_CAP = last_capability()  # read before fork: a run's root may have no /proc yet
_libc = ctypes.CDLL(None, use_errno=True)  # loaded up front: nothing heavy may run after fork

__all__ = ["PIDS_CGROUP_ROOT", "ContainmentFailed", "Limits", "RunIdentity", "RunRoot"]

# "none": a new, empty network namespace; "host": the run's own network namespace with a way
# out (`_netns`), given as a descriptor with the launch, else the host's; "shared": the host's
# own network namespace, filtered by uid (pipeline checks, which reach services on loopback).
Network = Literal["none", "host", "shared"]


@dataclass(frozen=True, kw_only=True)
class Limits:
    wall_timeout_s: float = 60.0
    # Address space (RLIMIT_AS) the job may add on top of the runtime it starts from: a warm
    # fork counts from the zygote's size at the fork, a cold Python run from the size of a
    # fresh interpreter (measured once by the cold zygote), a runner that calls
    # `limit_address_space` from its size after its own pre-imports. A program that sets no
    # limit of its own (`run_process` of any argv) gets it as a whole. All processes of a run
    # together are bounded too (a memory cgroup, where the machine has one): memory_mb on top
    # of the runtime's resident size.
    memory_mb: int = 2048
    cpu_s: int | None = None  # CPU seconds (RLIMIT_CPU); None → derived from the wall timeout
    file_size_mb: int = 256  # largest file the child may write (RLIMIT_FSIZE)
    max_processes: int = 64  # processes/threads the child may have at once
    # Bytes the run may have in its work dir (out/ and tmp/ included); None: no cap.
    disk_mb: int | None = None

    @property
    def effective_cpu_s(self) -> int:
        return self.cpu_s or int(self.wall_timeout_s * 2) + 5

    @property
    def effective_file_size_mb(self) -> int:
        return min(self.file_size_mb, self.disk_mb) if self.disk_mb else self.file_size_mb


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is: its own unprivileged uid/gid (None: the launcher's own), and its network
    (`Network`)."""

    uid: int | None = None
    gid: int | None = None
    network: Network = "host"


MB = 1024 * 1024


def address_space_bytes() -> int:
    """The address space this process has mapped now (what RLIMIT_AS counts)."""
    return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def limit_address_space(extra_mb: int) -> None:
    """RLIMIT_AS = what this process has mapped now + `extra_mb`: the memory limit of a job,
    applied once its runtime (interpreter, pre-imported libraries) is loaded."""
    limit = address_space_bytes() + extra_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def enter_run(
    limits: Limits,
    cgroup_procs: list[str],
    identity: RunIdentity | None,
    *,
    address_space: int | None,
    run_root: RunRoot | None = None,
    cwd: str | None = None,
    netns_fd: int | None = None,
) -> None:
    """Runs in the forked child before exec (or before user code in a zygote fork), in this
    order: join the run's cgroups and namespaces (needs root), enter the run's own view of the
    file system (`run_root`, with `cwd` its directory), drop every privilege and become the
    run's uid/gid, then the limits that are the process's own (rlimits, parent-death signal,
    which a change of uid would clear), and last the seccomp filter.

    `address_space` is the RLIMIT_AS in bytes, or None when the program sets its own once its
    runtime is loaded (`limit_address_space`)."""
    for procs in cgroup_procs:  # each cgroup's `tasks` file (`_Cgroup.join_file`)
        with open(procs, "w") as f:
            f.write("0")  # "0" moves the writing thread: a forked child's only one
    identity = identity or RunIdentity()
    if netns_fd is not None:  # the run's own network namespace (`network: "host"`)
        if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
            raise ContainmentFailed(ctypes.get_errno(), "cannot join the run's network namespace")
        os.close(netns_fd)
    root = os.geteuid() == 0
    # An IPC namespace of its own (SysV shared memory, queues, POSIX message queues die with
    # the run); no network at all unless it opted in; a mount namespace for its own root.
    flags = CLONE_NEWIPC if root else 0
    if identity.network == "none":
        flags |= CLONE_NEWNET
    if run_root is not None:
        flags |= CLONE_NEWNS
    if flags:
        unshare(flags, "the run's namespaces")
    if run_root is not None and cwd is not None:
        run_root.enter(cwd)
        os.chdir(cwd)
    os.umask(0o077)
    drop_privileges(identity.uid, identity.gid, last_cap=_LAST_CAP)
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    cpu = limits.effective_cpu_s
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    fsize = limits.effective_file_size_mb * MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0 and not any("/pids/" in p for p in cgroup_procs):
        # Without a cgroup this is the only process cap; it counts all of the user's processes.
        cap = limits.max_processes + _processes_of_current_user()
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
    set_parent_death_signal()
    if seccomp_available():  # else the worker warned at start (`HostCapabilities.warnings`)
        refuse_new_namespaces()


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
    the same (non-root) user, and keeps it from being ptraced by them. Runs have their own uid
    where the host allows it (`shopfloor.sandbox.host`); this matters where they do not."""
    _libc.prctl(_PR_SET_DUMPABLE, 0)
