"""Run untrusted code in a child process with limits, captured output and progress callbacks.

Shared by every job kind that runs user code (scripts, simulation). Two launchers produce the
same `SandboxOutcome`: a fresh interpreter (`run_process`) and, for jobs that import heavy
libraries, a fork of a warm, pre-imported zygote process (`shopfloor.sandbox.zygote`).
"""

from shopfloor.sandbox._limits import Limits, protect_from_same_user
from shopfloor.sandbox._output import OutputTail
from shopfloor.sandbox._process import Progress, SandboxOutcome, job_environment, run_process
from shopfloor.sandbox.zygote import Zygote, ZygoteDied, report_progress, run_fresh

__all__ = [
    "Limits",
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
