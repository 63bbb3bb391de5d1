"""Pipelines for tests: definitions of real `svc.py` services on free ports, their log lines,
and the process table."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.definition import validate_definition
from shopfloor.kinds.pipeline.models import (
    PipelineDefinition,
    PipelineInput,
    PipelineResult,
    PipelineStatus,
)
from shopfloor.kinds.pipeline.process import CGROUP_ROOT, MARKER, MEMORY_CGROUP_ROOT
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.settings import Settings
from tests.helpers import free_port

SERVICES = Path(__file__).parent / "services"
SVC = SERVICES / "svc.py"


def service(
    name: str,
    *,
    needs: tuple[str, ...] = (),
    healthy_after: float = 0.0,
    never_healthy: bool = False,
    escapee: bool = False,
    start_timeout_s: float = 15.0,
) -> dict[str, Any]:
    port = free_port()
    command = ["python3", str(SVC), "--name", name, "--port", str(port)]
    command += ["--healthy-after", str(healthy_after)]
    command += ["--never-healthy"] if never_healthy else []
    command += ["--escapee"] if escapee else []
    return {
        "name": name,
        "command": command,
        "cwd": str(SERVICES),
        "depends_on": list(needs),
        "health": {
            "http": f"http://127.0.0.1:{port}/health",
            "interval_s": 0.2,
            "timeout_s": 1,
            "start_timeout_s": start_timeout_s,
            "failures_before_restart": 1,
        },
        "stop_timeout_s": 3,
    }


def definition(*services: dict[str, Any], supervise_every_s: float = 0.5) -> PipelineDefinition:
    return validate_definition(
        {
            "name": f"p{uuid.uuid4().hex[:10]}",
            "supervise_every_s": supervise_every_s,
            "restart": {"backoff_initial_s": 0.5, "backoff_max_s": 2},
            "services": list(services),
        }
    )


async def start(
    client: Client, settings: Settings, d: PipelineDefinition
) -> WorkflowHandle[Any, PipelineResult]:
    return await client.start_workflow(
        "PipelineWorkflow",
        PipelineInput(definition=d),
        id=f"pipeline-{d.name}",
        task_queue=settings.task_queue_prefix + "pipeline-task-queue",
        result_type=PipelineResult,
    )


async def past_starting(handle: WorkflowHandle[Any, PipelineResult], *, timeout_s: float = 60):
    """The pipeline's status once it has left `starting` (or the last one after timeout_s)."""
    for _ in range(int(timeout_s * 10)):
        status = await handle.query("status", result_type=PipelineStatus)
        if status.phase != "starting":
            break
        await asyncio.sleep(0.1)
    return status


def log_of(settings: Settings, d: PipelineDefinition, name: str) -> str:
    path = settings.of(PipelineSettings).runtime_dir(settings.data_dir) / d.name / f"{name}.log"
    return path.read_text() if path.exists() else ""


def events(settings: Settings, d: PipelineDefinition, name: str) -> dict[str, list[float]]:
    """`started`, `healthy`, `stopping` → the times the service logged them (each start)."""
    found: dict[str, list[float]] = {}
    for line in log_of(settings, d, name).splitlines():
        word, _, rest = line.partition(" ")
        if word in ("started", "healthy", "stopping"):
            found.setdefault(word, []).append(float(rest.split()[0]))
    return found


def marked_by_prefix(prefix: str) -> list[tuple[_procfs.ProcStat, str]]:
    """Live processes whose service marker starts with `prefix` ("<pipeline>/" or
    "<pipeline>/<service>/"), each with its whole marker entry, straight from /proc."""
    wanted = f"{MARKER}={prefix}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        marker = next((e for e in env if e.startswith(wanted)), None)
        if marker is not None:
            st = _procfs.stat(int(entry))
            if st is not None and not st.exited:
                found.append((st, marker.decode()))
    return found


def marked(d: PipelineDefinition, name: str) -> list[_procfs.ProcStat]:
    """Live processes of a service (any run token of this pipeline), from /proc."""
    return [st for st, _ in marked_by_prefix(f"{d.name}/{name}/")]


def alive(pid: int) -> bool:
    st = _procfs.stat(pid)
    return st is not None and not st.exited


def kill_marked(pipeline: str) -> None:
    """After a failed test: SIGKILL whatever of `pipeline` is left (any run, any service) and
    remove its cgroups, so that no test leaves a process behind."""
    for _ in range(50):
        left = [st.pid for st, _ in marked_by_prefix(f"{pipeline}/")]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    for root in (CGROUP_ROOT, MEMORY_CGROUP_ROOT):
        for run in root.glob(f"{pipeline}.*") if root.exists() else []:
            for cgroup in [*run.iterdir(), run]:
                if cgroup.is_dir():
                    try:
                        cgroup.rmdir()
                    except OSError:
                        pass
