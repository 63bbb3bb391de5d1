"""Run untrusted code in a child process with limits, captured output and progress callbacks.

Shared by every job kind that runs user code (scripts, simulation). Two ways to start a child
produce the same `SandboxOutcome`: a fresh program (`run_process`, or `Zygote.run_exec` of the
cold zygote) and, for jobs that import heavy libraries, a fork of the warm, pre-imported zygote
(`shopfloor.sandbox.zygote`). What contains a run (its own uid, no network, cgroups, a private
view of the file system) is found out per host: `shopfloor.sandbox.host`.
"""

from shopfloor.sandbox._cgroup import release_pool as release_cgroup_pool
from shopfloor.sandbox._launch import Call, Exec, Script
from shopfloor.sandbox._limits import (
    Limits,
    RunIdentity,
    limit_address_space,
    protect_from_same_user,
)
from shopfloor.sandbox._output import OutputTail
from shopfloor.sandbox._process import (
    Progress,
    SandboxOutcome,
    disk_usage,
    job_environment,
    run_process,
)
from shopfloor.sandbox.zygote import Zygote, ZygoteDied, report_progress, run_fresh

__all__ = [
    "Call",
    "Exec",
    "Limits",
    "RunIdentity",
    "Script",
    "disk_usage",
    "limit_address_space",
    "release_cgroup_pool",
    "OutputTail",
    "Progress",
    "SandboxOutcome",
    "Zygote",
    "ZygoteDied",
    "job_environment",
    "protect_from_same_user",
    "report_progress",
    "run_fresh",
    "run_process",
]
