"""Run untrusted code in a child process with limits, captured output and progress callbacks.

Shared by every job kind that runs user code (scripts, simulation). Two ways to start a child
produce the same `SandboxOutcome`: a fresh program (`run_process`, or `Zygote.run_exec` of the
cold zygote) and, for jobs that import heavy libraries, a fork of the warm, pre-imported zygote
(`shopfloor.sandbox.zygote`). What contains a run (its own uid, no network, cgroups, a private
view of the file system) is found out per host: `shopfloor.sandbox.host`.
"""

from shopfloor.sandbox._cgroup import cgroup_pids, kill_cgroup
from shopfloor.sandbox._cgroup import release_pool as release_cgroup_pool
from shopfloor.sandbox._identity import UidLease, UidPool, WorkRoot, give_to, remove_run_dir
from shopfloor.sandbox._launch import Call, Exec, Script
from shopfloor.sandbox._limits import (
    MB,
    Limits,
    RunIdentity,
    limit_address_space,
    protect_from_same_user,
)
from shopfloor.sandbox._netns import RunNetworks
from shopfloor.sandbox._netns import usable as netns_usable
from shopfloor.sandbox._output import OutputTail
from shopfloor.sandbox._process import (
    LaunchOptions,
    Progress,
    SandboxOutcome,
    disk_usage,
    job_environment,
    run_process,
)
from shopfloor.sandbox.zygote import (
    Zygote,
    ZygoteDied,
    ZygoteOptions,
    report_progress,
    run_fresh,
)

__all__ = [
    "MB",
    "Call",
    "Exec",
    "LaunchOptions",
    "Limits",
    "RunIdentity",
    "RunNetworks",
    "Script",
    "UidLease",
    "UidPool",
    "WorkRoot",
    "disk_usage",
    "give_to",
    "cgroup_pids",
    "kill_cgroup",
    "limit_address_space",
    "netns_usable",
    "release_cgroup_pool",
    "remove_run_dir",
    "OutputTail",
    "Progress",
    "SandboxOutcome",
    "Zygote",
    "ZygoteDied",
    "ZygoteOptions",
    "job_environment",
    "protect_from_same_user",
    "report_progress",
    "run_fresh",
    "run_process",
]
