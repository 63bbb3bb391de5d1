"""Worker-side resources for kinds that run user code (scripts, simulation scenes).

One pair of zygotes per worker process, shared by every such kind (`WorkerContext.shared`):
`cold` forks fresh interpreters, so the big, threaded worker never forks itself; `warm` has
imported the heavy libraries the served kinds name (`JobKind.warm_imports`) and forks children
that start in milliseconds.

At start the worker finds out what the host offers to contain runs (`sandbox.host.detect`),
logs it, warns about what is missing, removes what an earlier, killed worker left, and makes
its own work root. `UserCodeRun` is what every such activity does around the user's code: a
uid of its own from the pool, a fresh 0700 job dir with `out/` and `tmp/`, the scrubbed job
environment, the limits, a warm fork or a cold interpreter, progress as heartbeats, a cancel
check, `out/` collected safely into the artifact store, clean-up however the run ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temporalio import activity

from shopfloor.artifacts import ArtifactStore, Collected
from shopfloor.jobs import JOB_PROGRESS, ensure_cancel_was_requested, invalid_input
from shopfloor.registry import WorkerContext
from shopfloor.sandbox import (
    Call,
    Limits,
    RunIdentity,
    SandboxOutcome,
    Script,
    Zygote,
    job_environment,
    release_cgroup_pool,
    run_fresh,
)
from shopfloor.sandbox._identity import UidLease, UidPool, WorkRoot, give_to, remove_run_dir
from shopfloor.sandbox.host import HostCapabilities, detect, install_network_filter
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.sandbox")
UID_LOCK_DIR = Path("/run/shopfloor-sandbox/uids")


@dataclass
class Containment:
    """What this worker uses to contain runs, decided once at start."""

    caps: HostCapabilities
    work_root: WorkRoot
    uids: UidPool | None
    disk_mb: int
    network_opt_in: bool  # whether `network: host` may run (filtered, or allowed unfiltered)
    warnings: list[str] = field(default_factory=list)

    def identity(self, lease: UidLease | None, network: str) -> RunIdentity:
        return RunIdentity(
            uid=lease.uid if lease else None,
            gid=lease.gid if lease else None,
            network="none" if network == "none" and self.caps.netns else "host",
        )


def containment(settings: Settings, caps: HostCapabilities | None = None) -> Containment:
    caps = caps or detect()
    uids = None
    if caps.own_uids:
        try:
            uids = UidPool(settings.sandbox_uid_base, settings.sandbox_uid_count, UID_LOCK_DIR)
        except OSError as err:
            log.warning("no uid pool (%s): runs keep the worker's uid", err)
    work_root = WorkRoot(settings.sandbox_root, shared_with_runs=uids is not None)
    for gone in work_root.sweep():
        log.info("removed %s, left by a worker that is gone", gone)
    work_root.create()
    network_opt_in = settings.sandbox_unfiltered_network
    if caps.iptables and uids is not None:
        last = settings.sandbox_uid_base + settings.sandbox_uid_count - 1
        forbidden = [settings.target_address, settings.public_controller_url]
        network_opt_in = install_network_filter((settings.sandbox_uid_base, last), forbidden)
    warnings = caps.warnings()
    clash = uids_taken(settings.sandbox_uid_base, settings.sandbox_uid_count) if uids else []
    if clash:
        warnings.append(
            f"uids {clash[:5]} of the sandbox range belong to users in /etc/passwd: choose "
            "another SHOPFLOOR_SANDBOX_UID_BASE"
        )
    if network_opt_in and not caps.iptables:
        warnings.append("network: host runs unfiltered (SHOPFLOOR_SANDBOX_UNFILTERED_NETWORK)")
    return Containment(
        caps=caps,
        work_root=work_root,
        uids=uids,
        disk_mb=settings.sandbox_disk_mb,
        network_opt_in=network_opt_in,
        warnings=warnings,
    )


@dataclass(frozen=True)
class Zygotes:
    cold: Zygote
    warm: Zygote | None  # None when no served kind has heavy imports
    contain: Containment | None = None


def warm_environment(modules: list[str]) -> dict[str, str]:
    """Settings the warm zygote's modules read when it imports them."""
    if "mujoco" not in modules:
        return {}
    from shopfloor.kinds.simulation import gl  # light: no mujoco import

    return gl.environment(gl.worker_backend())


def _zygote_options(contain: Containment, settings: Settings) -> dict:
    mounts = None
    if contain.caps.mountns and contain.uids is not None:
        hide = {str(settings.data_dir.resolve()), str(settings.artifact_root)}
        mounts = {
            "work_root": str(contain.work_root.path),
            "hide": sorted(hide),
            "tmp_mb": settings.sandbox_tmp_mb,
        }
    return {"mounts": mounts, "memory_cgroups": contain.caps.memory_cgroup}


@asynccontextmanager
async def zygotes(ctx: WorkerContext) -> AsyncIterator[Zygotes]:
    contain = containment(ctx.settings)
    log.info("%s", contain.caps.describe())
    for warning in contain.warnings:
        log.warning("sandbox: %s", warning)
    options = _zygote_options(contain, ctx.settings)
    try:
        cold = await Zygote.start([], **options)
        try:
            warm_imports = sorted({m for kind in ctx.served for m in kind.warm_imports})
            warm = (
                await Zygote.start(warm_imports, warm_environment(warm_imports), **options)
                if warm_imports
                else None
            )
            try:
                yield Zygotes(cold=cold, warm=warm, contain=contain)
            finally:
                if warm is not None:
                    await warm.close()
        finally:
            await cold.close()
    finally:
        release_cgroup_pool()  # no more jobs in this process: its cgroups go
        contain.work_root.remove()


class UserCodeRun:
    """One run of user code in its own job dir; `async with` it, inside an activity.

    `path` is the job dir (the child's cwd and HOME), `out` the directory whose files become
    the job's artifacts; all of it is removed on exit, however the run ended. With an own
    uid, the dir is the run's (0700) and inputs written into it before `run` are handed over.
    """

    def __init__(
        self,
        zygotes: Zygotes,
        artifacts: ArtifactStore,
        limits: Limits,
        user_env: Mapping[str, str] | None = None,
        *,
        network: str = "none",
    ) -> None:
        self.zygotes, self.artifacts = zygotes, artifacts
        self.user_env = dict(user_env or {})
        self.network = network
        self.contain = zygotes.contain
        if self.contain is not None:
            disk = min(limits.disk_mb or self.contain.disk_mb, self.contain.disk_mb)
            limits = Limits(**{**limits.__dict__, "disk_mb": disk})
        self.limits = limits
        self.path = Path()
        self._lease: UidLease | None = None

    async def __aenter__(self) -> UserCodeRun:
        contain = self.contain
        if contain is None:  # a resource made without containment (tests of old callers)
            import tempfile

            self.path = Path(tempfile.mkdtemp(prefix="shopfloor-run-"))
            (self.path / "out").mkdir()
            (self.path / "tmp").mkdir()
            return self
        if self.network == "host" and not contain.network_opt_in:
            raise invalid_input(
                "network: host is not available on this worker: it cannot keep a run with "
                "network away from the Temporal frontend and the controller (no iptables)"
            )
        if contain.uids is not None:
            self._lease = contain.uids.acquire()
        lease = self._lease
        try:
            self.path = contain.work_root.new_run_dir(
                lease.uid if lease else None, lease.gid if lease else None
            )
        except BaseException:
            self._release()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        remove_run_dir(self.path)
        if self._lease is not None:
            zygotes = (self.zygotes.cold, self.zygotes.warm)
            remove_files_of(self._lease.uid, [z.pid for z in zygotes if z is not None])
        self._release()

    def _release(self) -> None:
        if self._lease is not None and self.contain is not None and self.contain.uids:
            self.contain.uids.release(self._lease)
            self._lease = None

    @property
    def out(self) -> Path:
        return self.path / "out"

    async def run(self, *, warm: Script | Call | None, cold: list[str]) -> SandboxOutcome:
        """Runs `warm` in a fork of the warm zygote when there is one and it is given, else
        the `cold` argv in a fresh interpreter (`cold_python` argv: RLIMIT_AS counted from a
        fresh interpreter's size; a `-m` runner applies the memory limit itself once its
        runtime is loaded, `limit_address_space`). A cancelled run returns only if the user
        asked for the cancel (else the activity fails and is retried)."""
        lease = self._lease
        if lease is not None:
            give_to(self.path, lease.uid, lease.gid)
        identity = self.contain.identity(lease, self.network) if self.contain else None
        options = {
            "cwd": self.path,
            "env": job_environment(self.path, self.user_env),
            "limits": self.limits,
            "identity": identity,
            "watch_dir": self.path,
            **JOB_PROGRESS,
        }
        if self.ran_warm(warm):
            assert self.zygotes.warm is not None and warm is not None
            if isinstance(warm, Script):
                outcome = await self.zygotes.warm.run_script(Path(warm.path), warm.args, **options)
            else:
                outcome = await self.zygotes.warm.run_call(warm.target, warm.arg, **options)
        else:
            python = cold[:2] == [sys.executable, "-E"] and "-m" not in cold
            outcome = await run_fresh(
                cold,
                cold=self.zygotes.cold,
                sets_own_memory_limit=not python,
                python=python,
                **options,
            )
        if outcome.killed_reason == "cancelled":
            ensure_cancel_was_requested()
        return outcome

    def ran_warm(self, warm: Script | Call | None) -> bool:
        """Whether `run(warm=warm, ...)` forks the warm zygote."""
        return warm is not None and self.zygotes.warm is not None

    def collect_out(self, outcome: SandboxOutcome | None = None) -> Collected:
        """The regular files under `out/` into the artifact store (names → URIs), and what
        was refused (symlinks, hard links to files outside the run, special files, bad
        names). A run stopped for its disk cap keeps nothing: it may be half-written."""
        if outcome is not None and outcome.killed_reason == "disk":
            return Collected(uris={}, refused={"out/": "the run exceeded its disk cap"})
        return self.artifacts.collect_tree(activity.info().workflow_id, self.out, run_dir=self.path)

    def store_out(self) -> dict[str, str]:
        """Every regular file under `out/` into the artifact store: relative name → URI."""
        return self.collect_out().uris


PRIVATE_TMP = ("tmp", "var/tmp", "dev/shm")


def remove_files_of(uid: int, zygote_pids: list[int | None]) -> None:
    """What a run left in its zygotes' private /tmp, /var/tmp and /dev/shm, before its uid
    goes to another run (reached through /proc/<zygote>/root, the zygote's own view)."""
    for pid in zygote_pids:
        if pid is None:
            continue
        for sub in PRIVATE_TMP:
            top = Path(f"/proc/{pid}/root/{sub}")
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    pass


def uids_taken(base: int, count: int) -> list[int]:
    """Uids of the pool's range that /etc/passwd gives to someone (a clash to warn about)."""
    taken = []
    try:
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit() and base <= int(fields[2]) < base + count:
                taken.append(int(fields[2]))
    except OSError:
        pass
    return taken


def cold_python_argv(script: str, args: list[str]) -> list[str]:
    """`python script.py args` in a fresh, isolated interpreter; its RLIMIT_AS is a fresh
    interpreter's size (measured once by the cold zygote) + memory_mb."""
    return [sys.executable, "-E", "-s", "-u", script, *args]


def cold_module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` in a fresh, isolated interpreter (the module applies the memory
    limit itself: `shopfloor.sandbox.limit_address_space`)."""
    return [sys.executable, "-E", "-s", "-m", module, *args]
