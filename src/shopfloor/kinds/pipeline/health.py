"""Health checks: an HTTP status, an accepting TCP port, or a command that exits 0.

Every check comes from the pipeline's definition, which anyone who may start a pipeline
writes: a command runs contained exactly like a script job (`ContainedChecks`), never as the
worker; so does the probe of an HTTP or TCP check (`PROBE`), whose address is as untrusted —
from the run's uid, the control plane's ports are filtered away (a GET to Temporal's HTTP API,
a connect to the controller, are refused as for any run).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from typing import Protocol

import httpx

from shopfloor.kinds.pipeline.models import HealthCheck
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.sandbox import (
    LaunchOptions,
    Limits,
    SandboxOutcome,
    job_environment,
    remove_run_dir,
)
from shopfloor.settings import Settings
from shopfloor.usercode import Zygotes

CHECK_PATH = "/usr/local/bin:/usr/bin:/bin"  # a check's PATH: the scrubbed job environment's
TAIL_BYTES = 4096  # of a check's output: an error shows its last line


class CommandChecks(Protocol):
    async def run(self, argv: list[str], timeout_s: float) -> str | None:
        """None when the command exited 0, else what was wrong (one line)."""
        ...

    async def probe(self, check: HealthCheck) -> str | None:
        """An HTTP or TCP check made from a contained run: None when healthy, else why."""
        ...

    @property
    def probes_contained(self) -> bool:
        """Whether `probe` can reach the host's loopback (filtered): else the worker probes."""
        ...


# An HTTP or TCP probe in a contained, fresh interpreter (-I -S: the standard library only):
# exit 0 when healthy, else one line saying why, in the words of the worker's own probes.
PROBE = """
import socket, sys, urllib.error, urllib.request
kind, target, expect, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
        sys.exit(0)
    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # a redirect's status is the answer, as the worker's GET had it
    opener = urllib.request.build_opener(Keep, urllib.request.ProxyHandler({}))
    try:
        status = opener.open(target, timeout=timeout).status
    except urllib.error.HTTPError as err:
        status = err.code
    if status == expect:
        sys.exit(0)
    print(f"GET {target}: status {status}, expected {expect}")
except TimeoutError:
    print(f"{kind} check timed out after {timeout:g}s")
except OSError as err:
    reason = getattr(err, "reason", err)
    what = f"GET {target}: " if kind == "http" else f"{kind} check: "
    print(what + str(getattr(reason, "strerror", None) or reason))
sys.exit(1)
"""


async def check_health(check: HealthCheck, *, commands: CommandChecks | None) -> str | None:
    """None when healthy, else what was wrong (one line: it ends up in status and errors)."""
    try:
        if (check.http or check.tcp) and commands is not None and commands.probes_contained:
            return await commands.probe(check)
        if check.http:
            return await _http(check.http, check.expect_status, check.timeout_s)
        if check.tcp:
            return await _tcp(check.tcp, check.timeout_s)
        assert check.command
        if commands is None:
            return "command checks cannot run here: this worker has no sandbox for them"
        return await commands.run(check.command, check.timeout_s)
    except TimeoutError:
        return f"{check.kind} check timed out after {check.timeout_s:g}s"
    except OSError as err:
        return f"{check.kind} check: {err.strerror or err}"


async def _http(url: str, expect: int, timeout_s: float) -> str | None:
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
        try:
            response = await http.get(url)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as err:
            return f"GET {url}: {type(err).__name__}: {err}"
    if response.status_code != expect:
        return f"GET {url}: status {response.status_code}, expected {expect}"
    return None


async def _tcp(address: str, timeout_s: float) -> str | None:
    host, _, port = address.rpartition(":")
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    writer.close()
    await writer.wait_closed()
    return None


class ContainedChecks:
    """Check commands through the worker's cold zygote, as a script job runs: a uid of its own
    leased from the machine-wide pool for the check's duration, a fresh 0700 run dir as cwd
    and HOME, the scrubbed job environment, small limits (memory, processes, disk, time) with
    cgroups, the zygote's private view of the file system, and the host's network filtered
    away from the control plane (`network: host` of a script: services are on loopback)."""

    def __init__(self, zygotes: Zygotes, settings: Settings) -> None:
        self.zygotes = zygotes
        own = settings.of(PipelineSettings)
        self.memory_mb = own.check_memory_mb
        self.max_processes = own.check_max_processes

    @property
    def probes_contained(self) -> bool:
        contain = self.zygotes.contain
        return contain is not None and contain.network_opt_in

    async def probe(self, check: HealthCheck) -> str | None:
        target = check.http or check.tcp
        assert target is not None
        argv = [sys.executable, "-I", "-S", "-c", PROBE, check.kind, target]
        # The run's own wall timeout is the check's plus an interpreter's start.
        outcome = await self._contained(
            [*argv, str(check.expect_status), str(check.timeout_s)], check.timeout_s + 5
        )
        if outcome.exit_code == 0 and not outcome.killed_reason:
            return None
        lines = outcome.stdout.strip().splitlines()
        return lines[-1][:300] if lines else _verdict(f"{check.kind} check", 0, outcome)

    async def run(self, argv: list[str], timeout_s: float) -> str | None:
        # The zygote execs without a PATH search: found here, in the job environment's PATH.
        executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=CHECK_PATH)
        if executable is None:
            return f"{argv[0]}: command not found"
        outcome = await self._contained([executable, *argv[1:]], timeout_s)
        return _verdict(argv[0], timeout_s, outcome)

    async def _contained(self, argv: list[str], timeout_s: float) -> SandboxOutcome:
        contain = self.zygotes.contain
        assert contain is not None, "a worker's zygotes come with their containment"
        lease = contain.uids.acquire() if contain.uids is not None else None
        uid, gid = (lease.uid, lease.gid) if lease else (None, None)
        try:
            path = contain.work_root.new_run_dir(uid, gid)
            try:
                options = LaunchOptions(
                    cwd=path,
                    env=job_environment(path, {}),
                    limits=Limits(
                        wall_timeout_s=timeout_s,
                        memory_mb=self.memory_mb,
                        max_processes=self.max_processes,
                        file_size_mb=16,
                        disk_mb=min(16, contain.disk_mb),
                    ),
                    # The host's own network namespace, filtered by uid: the pipeline's services
                    # listen on its loopback.
                    identity=contain.identity(
                        lease, "shared" if contain.network_opt_in else "none"
                    ),
                    watch_dir=path,
                    tail_bytes=TAIL_BYTES,
                )
                return await self.zygotes.cold.run_exec(argv, options)
            finally:
                remove_run_dir(path)
        finally:
            if lease is not None and contain.uids is not None:
                contain.uids.release(lease)


def _verdict(command: str, timeout_s: float, outcome: SandboxOutcome) -> str | None:
    if outcome.timed_out or outcome.killed_reason == "timeout":
        return f"command check timed out after {timeout_s:g}s"
    if outcome.exit_code == 0 and not outcome.killed_reason:
        return None
    lines = (outcome.stdout + outcome.stderr).strip().splitlines()
    last = lines[-1][:200] if lines else ""
    if outcome.killed_reason:
        how = f"killed ({outcome.killed_reason})"
    elif outcome.exit_code is None:
        how = f"killed by {outcome.signal}"
    else:
        how = f"exited {outcome.exit_code}"
    return f"{command} {how}: {last}".rstrip(": ")
