"""Fresh-interpreter launcher: a child in its own session, limits applied, output captured."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from shopfloor.sandbox._cgroup import MemoryCgroup, PidsCgroup
from shopfloor.sandbox._limits import MB, Limits, RunIdentity, enter_run
from shopfloor.sandbox._output import OutputTail

KILL_GRACE_S = 2.0
FIRST_PROGRESS_S = 0.5
WATCH_EVERY_S = 0.2  # disk use and OOM kills are checked this often while a run is watched
MAX_FILES = 100_000  # entries a run's work dir may hold (a disk cap that millions of empty
# files would not hit, and a walk that would not end)
# Why a run was stopped (a script's result carries it: kinds.scripts.models.KilledReason).
KilledReason = Literal["timeout", "memory", "cpu", "processes", "file_size", "disk", "cancelled"]


@dataclass
class Progress:
    elapsed_s: float
    stdout_bytes: int
    stderr_bytes: int
    last_line: str
    stage: dict[str, Any] | None = None  # what warm-forked code reports (e.g. its sim time)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.stage is None:
            del data["stage"]
        return data


@dataclass
class SandboxOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: str | None  # e.g. "SIGKILL"
    timed_out: bool
    killed_reason: KilledReason | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    duration_s: float
    warnings: list[str] = field(default_factory=list)


def job_environment(workdir: Path, user_env: dict[str, str]) -> dict[str, str]:
    """A scrubbed environment: nothing of the worker's (its secrets included) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "SHOPFLOOR_OUT": str(workdir / "out"),
        **user_env,
    }


ProgressCallback = Callable[[Progress], Awaitable[None] | None]


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """How one run starts and is watched, whichever launcher starts it (`run_process`, a
    zygote's fork or exec): one typed object from the activity down to the launcher."""

    cwd: Path
    env: dict[str, str]
    limits: Limits
    identity: RunIdentity | None = None  # its uid and network (None: the worker's)
    # The directory whose size `limits.disk_mb` caps (`run_process` watches its cwd).
    watch_dir: Path | None = None
    on_progress: ProgressCallback | None = None
    progress_every: float | None = None  # the caller's reporting interval: no default of ours
    tail_bytes: int = 64 * 1024
    # The run's own network namespace: the launcher that gets it closes it once passed on.
    netns_fd: int | None = None

    def __post_init__(self) -> None:
        if self.on_progress is not None and self.progress_every is None:
            raise ValueError("on_progress needs progress_every: the caller's reporting interval")


def disk_usage(path: Path, max_files: int = MAX_FILES) -> tuple[int, int]:
    """(bytes, entries) under `path`, never following symlinks. A file counts by the larger of
    its apparent size and its allocated blocks: a sparse file costs no blocks here but is read
    (and stored) dense, and a preallocated one holds blocks beyond its size."""
    total = entries = 0
    stack = [str(path)]
    while stack and entries <= max_files:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(st.st_size, st.st_blocks * 512)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total, entries


def over_disk_cap(used: int, entries: int, disk_mb: int) -> str:
    """What a run over its disk cap had, and the cap it went past."""
    if entries > MAX_FILES:
        return f"disk: the work dir held more than {MAX_FILES} entries (the cap on entries)"
    return (
        f"disk: the work dir held {used / MB:.1f} MB (files by apparent size), over its cap "
        f"of {disk_mb} MB (disk_mb)"
    )


class Child:
    """Book-keeping shared by both launchers: the process group, the cgroups, the output
    tails, what is watched while the run goes on (its work dir's size, OOM kills)."""

    def __init__(
        self,
        limits: Limits,
        tail_bytes: int,
        *,
        memory_bytes: int | None = None,
        watch_dir: Path | None = None,
    ) -> None:
        self.limits = limits
        # One more than the run asks for: its init, where it has a pid namespace of its own.
        self.cgroup = PidsCgroup.create(limits.max_processes + 1)
        self.memory = MemoryCgroup.create(memory_bytes) if memory_bytes else None
        self.watch_dir = watch_dir if limits.disk_mb else None
        self.stdout = OutputTail(tail_bytes)
        self.stderr = OutputTail(tail_bytes)
        self.started = time.monotonic()
        self.stage: dict[str, Any] | None = None  # JSON from the run (zygote._read_stage)
        self.warnings: list[str] = []
        self.disk_found = ""
        if self.cgroup is None and os.getuid() == 0:
            self.warnings.append(
                "no writable pids cgroup and running as root: the process limit is not enforced"
            )

    @property
    def cgroup_procs(self) -> list[str]:
        return [str(c.join_file) for c in (self.cgroup, self.memory) if c is not None]

    @property
    def watched(self) -> bool:
        return self.watch_dir is not None or self.memory is not None

    def over_a_limit(self) -> Literal["memory", "disk"] | None:
        """`memory` or `disk` when the run went past one (checked while it runs and after)."""
        if self.memory is not None and self.memory.oom_killed():
            return "memory"
        if self.watch_dir is not None and self.limits.disk_mb:
            used, entries = disk_usage(self.watch_dir)
            if used > self.limits.disk_mb * MB or entries > MAX_FILES:
                if not self.disk_found:  # the result says what was found, once
                    self.disk_found = over_disk_cap(used, entries, self.limits.disk_mb)
                    self.warnings.append(self.disk_found)
                return "disk"
        return None

    def progress(self) -> Progress:
        return Progress(
            elapsed_s=round(time.monotonic() - self.started, 3),
            stdout_bytes=self.stdout.total_bytes,
            stderr_bytes=self.stderr.total_bytes,
            last_line=self.stdout.last_line or self.stderr.last_line,
            stage=self.stage,
        )

    def kill_tree(self, pgid: int, *, run_over: bool = False) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for cgroup in (self.cgroup, self.memory):
            if cgroup is not None:
                cgroup.kill_all(run_over=run_over)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_: object) -> None:
        """The cgroups go back to the pool however the run ended (even if it never started)."""
        for cgroup in (self.cgroup, self.memory):
            if cgroup is not None:
                cgroup.release()

    def outcome(self, returncode: int, killed_by_us: KilledReason | None) -> SandboxOutcome:
        exit_code = returncode if returncode >= 0 else None
        sig = signal.Signals(-returncode).name if returncode < 0 else None
        reason = killed_by_us or self.over_a_limit() or self._classify(sig)
        return SandboxOutcome(
            exit_code=exit_code,
            signal=sig,
            timed_out=killed_by_us == "timeout",
            killed_reason=reason,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            stdout_bytes=self.stdout.total_bytes,
            stderr_bytes=self.stderr.total_bytes,
            duration_s=round(time.monotonic() - self.started, 3),
            warnings=self.warnings,
        )

    def _classify(self, sig: str | None) -> KilledReason | None:
        """Why the child died, when it was not us who killed it."""
        if sig == "SIGXCPU":
            return "cpu"
        if sig == "SIGXFSZ":
            return "file_size"
        tail = self.stderr.text()[-4000:]
        if "MemoryError" in tail or "std::bad_alloc" in tail or "Cannot allocate memory" in tail:
            return "memory"
        if self.cgroup is not None and self.cgroup.hit_limit():
            return "processes"
        if "BlockingIOError: [Errno 11]" in tail:  # fork refused by RLIMIT_NPROC
            return "processes"
        return None


async def supervise(
    child: Child,
    *,
    pgid: int,
    wait: Awaitable[int],
    readers: Sequence[asyncio.Task[None]],
    options: LaunchOptions,
) -> SandboxOutcome:
    """Waits for the child, reporting progress, enforcing the wall timeout, honouring cancel."""
    on_progress, progress_every = options.on_progress, options.progress_every
    wait_task = asyncio.ensure_future(wait)
    deadline = child.started + child.limits.wall_timeout_s
    killed_by_us: KilledReason | None = None
    # The first report comes early, so a watcher soon sees the job running; a job shorter than
    # that sends none (a heartbeat is a server round trip, the cost of a whole short script).
    # (`LaunchOptions` makes sure `progress_every` is set when `on_progress` is.)
    every = progress_every if on_progress is not None and progress_every is not None else math.inf
    next_report = time.monotonic() + min(FIRST_PROGRESS_S, every)
    watch = WATCH_EVERY_S if child.watched else math.inf
    try:
        while not wait_task.done():
            now = time.monotonic()
            timeout = max(0.0, min(next_report - now, watch, deadline - now))
            await asyncio.wait({wait_task}, timeout=timeout)
            if wait_task.done():
                break
            if time.monotonic() >= deadline:
                killed_by_us = "timeout"
                child.kill_tree(pgid)
                break
            if child.watched and (over := child.over_a_limit()):
                killed_by_us = over
                child.kill_tree(pgid)
                break
            if time.monotonic() < next_report:
                continue
            next_report = time.monotonic() + every
            if on_progress is not None:
                maybe = on_progress(child.progress())
                if maybe is not None:
                    await maybe
    except asyncio.CancelledError:
        # Cancellation of the job: the whole tree goes, and the caller gets a result saying so.
        killed_by_us = "cancelled"
        child.kill_tree(pgid)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    returncode = await wait_task
    # Background children of the script must not outlive the job.
    child.kill_tree(pgid, run_over=True)
    _, pending = await asyncio.wait(readers, timeout=KILL_GRACE_S)
    for reader in pending:  # a grandchild we could not reach still holds the pipe
        reader.cancel()
    return child.outcome(returncode, killed_by_us)


async def _exit_status(proc: asyncio.subprocess.Process) -> int:
    """The child's exit status as soon as it exits.

    `Process.wait()` also waits for the pipes to close, which a backgrounded grandchild can hold
    open forever; a pidfd tells us when the child itself is gone.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        pidfd = None
    if pidfd is not None:
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    while proc.returncode is None:  # asyncio's child watcher reaps it a moment later
        await asyncio.sleep(0.002)
    return proc.returncode


async def run_process(
    argv: Sequence[str],
    options: LaunchOptions,
    *,
    sets_own_memory_limit: bool = False,
    memory_bytes: int | None = None,
) -> SandboxOutcome:
    """Runs `argv` in a new session with `options.limits`; never raises for anything the
    child does.

    Progress goes to `options.on_progress` every `progress_every` seconds while the child
    runs. RLIMIT_AS is `limits.memory_mb` from the exec, unless the program
    `sets_own_memory_limit` once its runtime is loaded (`limit_address_space`);
    `memory_bytes`: a memory cgroup limit over the child's whole tree; with `limits.disk_mb`
    the cwd's size is capped."""
    limits, netns_fd = options.limits, options.netns_fd
    with Child(
        limits, options.tail_bytes, memory_bytes=memory_bytes, watch_dir=options.cwd
    ) as child:
        procs = child.cgroup_procs
        address_space = None if sets_own_memory_limit else limits.memory_mb * MB
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=options.cwd,
            env=options.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=(netns_fd,) if netns_fd is not None else (),
            preexec_fn=lambda: enter_run(
                limits, procs, options.identity, address_space=address_space, netns_fd=netns_fd
            ),
        )
        if netns_fd is not None:
            os.close(netns_fd)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(child.stdout.drain(proc.stdout)),
            asyncio.create_task(child.stderr.drain(proc.stderr)),
        ]
        return await supervise(
            child, pgid=proc.pid, wait=_exit_status(proc), readers=readers, options=options
        )
