"""The `process` runtime: services as local processes, detached from the worker.

Each service runs in its own session (it outlives the worker: a pipeline keeps running while
workers come and go), writes stdout/stderr to `<run dir>/<pipeline>/<service>.log`, and is
identified by a marker in its environment plus a pidfile holding its pid and /proc start time.
So a start retried after a worker crash finds the running service instead of starting a second.

A service runs whatever its definition says, and anyone who may start a pipeline writes one:
on a root worker it is contained like a job run (`ServiceSandbox`, applied by `_launch.py`).
Its uid is leased from the machine-wide pool of run uids (so the network filter and everything
else that holds for runs holds for it), for as long as it lives: the lease's flock'd file stays
open in the service. It gets a scrubbed environment, a pids and (where there is one) a memory
cgroup of its own (stopping a service kills everything it forked, even children that left its
session, whichever worker does the stopping), no_new_privs, IPC and mount namespaces of its
own where the worker's data, artifacts, checkout, /root and the Temporal database are hidden,
and a home directory of its own when its definition names no `cwd`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.health import CommandChecks, check_health
from shopfloor.kinds.pipeline.models import Probe, ServiceHandle, ServiceRef, StopReport
from shopfloor.kinds.pipeline.runtime import LOG_TAIL_BYTES
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.processes import listening_pid, open_files
from shopfloor.sandbox import UidLease, UidPool, _contain, kill_cgroup
from shopfloor.sandbox._contain import interpreter_trees
from shopfloor.settings import Settings

MARKER = "SHOPFLOOR_PIPELINE_SERVICE"
# The launcher runs with -I -S (no package import): it loads the sandbox's levers from here.
CONTAIN_MODULE = str(Path(_contain.__file__).resolve())
CGROUP_ROOT = Path("/sys/fs/cgroup/pids/shopfloor-pipelines")
MEMORY_CGROUP_ROOT = Path("/sys/fs/cgroup/memory/shopfloor-pipelines")
LAUNCHER = Path(__file__).with_name("_launch.py")
# What a service's environment starts from: nothing of the worker's (its settings hold keys).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def marker_of(ref: ServiceRef) -> str:
    return f"{ref.pipeline}/{ref.service.name}/{ref.run_token}"


# `pipeline_run_as = "per-service"` (or ""): each service a uid of its own from the run pool.
PER_SERVICE = "per-service"
# The launcher's own private /tmp, where it builds the service's root (`RunRoot`, whose /tmp
# and /dev/shm are the service's own): the host's /var/tmp and /dev/shm are not in that root.
PRIVATE_TMP = ("/tmp",)


def _user(name: str) -> tuple[int, int] | None:
    """The one user the operator named for all services (root is never one)."""
    if os.geteuid() != 0 or not name or name == PER_SERVICE:
        return None
    entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise ValueError("SHOPFLOOR_PIPELINE_RUN_AS names root: services never run as root")
    return entry.pw_uid, entry.pw_gid


def _cgroups_usable(root: Path | None) -> Path | None:
    if root is None or os.geteuid() != 0 or not (root.parent / "cgroup.procs").exists():
        return None
    try:
        root.mkdir(exist_ok=True)
    except OSError:
        return None
    return root


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@dataclass(frozen=True)
class ServiceSandbox:
    """What contains services on this worker, decided once at start (`service_sandbox`)."""

    uids: UidPool | None = None  # the machine-wide pool of run uids (root workers)
    hidden: tuple[str, ...] = ()  # directories covered by an empty root-only tmpfs
    # Covered directories from which a definition's `cwd` may be bound back (the checkout,
    # where example definitions live, and the private /tmp): never the data dir, the artifact
    # store or /root, never a directory holding anything hidden.
    reachable: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # files read as empty (/dev/null over them)
    tmp_mb: int = 64
    trees: tuple[str, ...] = ()  # the interpreter's trees, read-only in a service's root
    memory_mb: int | None = None
    max_processes: int | None = None
    # The monitoring pipeline's opening: the group its services run as (the network filter
    # lets that group reach the metrics ports), and which services are its.
    metrics_gid: int | None = None
    monitoring: Callable[[ServiceRef], bool] | None = None

    def reads_metrics(self, ref: ServiceRef) -> bool:
        return self.metrics_gid is not None and self.monitoring is not None and self.monitoring(ref)

    @property
    def mounts(self) -> bool:
        return bool(self.hidden)

    def covers(self, binds: list[str]) -> list[list[str]]:
        """The tmpfs mounts, outermost first: a cover with a directory bound back inside lets
        the service's uid pass through (0711) to it, and holds only the way there."""
        out = []
        for path in sorted({*self.hidden, *PRIVATE_TMP}, key=lambda p: len(Path(p).parts)):
            if path in PRIVATE_TMP:
                data = f"mode=1777,size={self.tmp_mb}m,nr_inodes=16k"
            elif any(_inside(b, path) for b in binds):
                data = "mode=0711,size=1m,nr_inodes=1k"
            else:
                data = "mode=0700,size=16k,nr_inodes=16"
            out.append([path, data])
        return out

    def bind_for(self, cwd: str) -> list[str]:
        """[cwd] when it lies under a cover and must be bound back, [] when the service sees it
        as it is; PermissionError when it would uncover something hidden."""
        covering = [c for c in (*self.hidden, *PRIVATE_TMP) if _inside(cwd, c)]
        if not covering or not self.mounts:
            return []
        secret = [h for h in (*self.hidden, *self.files) if _inside(h, cwd)]
        if secret or not all(c in self.reachable for c in covering):
            raise PermissionError(
                f"cwd {cwd} is not reachable by services: it is, or holds, what the worker hides "
                "from them (its data dir, artifact store, checkout root, /root)"
            )
        return [cwd]


def temporal_files(settings: Settings) -> list[str]:
    """The SQLite files of a Temporal server on this machine (the embedded dev server's, or
    one a test started): what it has open, found through the process on the frontend port."""
    address = settings.target_address.rsplit(":", 1)
    pid = listening_pid(int(address[1])) if len(address) == 2 and address[1].isdigit() else None
    suffixes = (".db", ".db-wal", ".db-shm", ".sqlite")
    found = {t for t in open_files(pid) if t.endswith(suffixes)} if pid is not None else set()
    embedded = (settings.data_dir / "temporal.db").resolve()
    found |= {f"{embedded}{suffix}" for suffix in ("", "-wal", "-shm")}
    return sorted(found)


def service_sandbox(settings: Settings, uids: UidPool | None) -> ServiceSandbox:
    """Root workers contain services; others cannot (services then run as the worker's user)."""
    if os.geteuid() != 0:
        return ServiceSandbox()
    checkout = os.getcwd()  # where the worker runs: its `.env` and, by default, its data
    hidden = {
        str(settings.data_dir.resolve()),
        str(settings.artifact_root),
        str(settings.of(PipelineSettings).runtime_dir(settings.data_dir)),
        "/root",
    }
    reachable = set(PRIVATE_TMP)
    if checkout != "/":
        hidden.add(checkout)
        reachable.add(checkout)
    files = [*temporal_files(settings), os.path.join(checkout, ".env")]
    if settings.tls_key is not None:
        files.append(str(settings.tls_key.resolve()))
    monitoring = None
    if settings.monitoring_pipeline:
        from shopfloor.kinds.pipeline.monitoring import is_monitoring_service

        monitoring = partial(is_monitoring_service, settings)
    return ServiceSandbox(
        metrics_gid=settings.monitoring_gid if monitoring else None,
        monitoring=monitoring,
        uids=uids,
        hidden=tuple(sorted(hidden)),
        reachable=tuple(sorted(reachable)),
        files=tuple(files),
        tmp_mb=settings.sandbox_tmp_mb,
        trees=tuple(interpreter_trees(exclude=[checkout])),
        memory_mb=settings.of(PipelineSettings).service_memory_mb,
        max_processes=settings.of(PipelineSettings).service_max_processes,
    )


class ProcessRuntime:
    def __init__(
        self,
        run_dir: Path,
        *,
        run_as: str = "",
        cgroup_root: Path | None = CGROUP_ROOT,
        memory_cgroup_root: Path | None = MEMORY_CGROUP_ROOT,
        sandbox: ServiceSandbox | None = None,
        checks: CommandChecks | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.user = _user(run_as)
        self.sandbox = sandbox or ServiceSandbox()
        self.checks = checks  # how health-check commands run (contained); None: refused
        self.cgroup_root = _cgroups_usable(cgroup_root)
        self.memory_cgroup_root = _cgroups_usable(memory_cgroup_root)
        # Services this worker started: polled so that they are reaped when they exit (a
        # zombie is no service), and to say how they ended.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- where things are ---------------------------------------------------------------------

    def log_path(self, ref: ServiceRef) -> Path:
        return self.run_dir / ref.pipeline / f"{ref.service.name}.log"

    def _pidfile(self, ref: ServiceRef) -> Path:
        return self.run_dir / ref.pipeline / f"{ref.service.name}.pid"

    def _cgroups(self, ref: ServiceRef) -> list[Path]:
        roots = (self.cgroup_root, self.memory_cgroup_root)
        return [r / f"{ref.pipeline}.{ref.run_token}" / ref.service.name for r in roots if r]

    def _home(self, ref: ServiceRef) -> Path:
        """A service's own directory when its definition names no cwd: fresh at each start,
        under a root-only directory (it reaches it only where its mounts bind it back)."""
        return self.run_dir / ref.pipeline / "homes" / ref.service.name

    # -- the runtime interface ----------------------------------------------------------------

    async def start(self, ref: ServiceRef) -> ServiceHandle:
        return await asyncio.to_thread(self._start, ref)

    async def probe(self, ref: ServiceRef) -> Probe:
        pid = await asyncio.to_thread(self.find, ref)
        if pid is None:
            return Probe(
                alive=False, healthy=False, error=self._how_it_ended(ref), log_tail=self._tail(ref)
            )
        health = ref.service.health
        error = await check_health(health, commands=self.checks) if health else None
        return Probe(
            alive=True,
            healthy=error is None,
            error=error,
            pid=pid,
            log_tail=self._tail(ref) if error else "",
        )

    async def stop(self, ref: ServiceRef) -> StopReport:
        return await asyncio.to_thread(self._stop, ref)

    async def log_tail(self, ref: ServiceRef) -> str:
        return self._tail(ref)

    # -- finding a service ----------------------------------------------------------------------

    def find(self, ref: ServiceRef) -> int | None:
        """The pid of this run's instance of the service, if it is running."""
        self._reap()
        try:
            recorded = json.loads(self._pidfile(ref).read_text())
            if recorded["token"] == ref.run_token and _procfs.running(
                recorded["pid"], recorded["starttime"]
            ):
                pid: int = recorded["pid"]
                return pid
        except (OSError, ValueError, KeyError):
            pass
        # No pidfile (the worker died between spawning and writing it), or a stale one: the
        # marker tells. The service leads its own session and its parent is not marked (its
        # forks inherit the marker).
        procs = _procfs.marked(MARKER, marker_of(ref))
        pids = {p.pid for p in procs}
        main = [p for p in procs if p.sid == p.pid and p.ppid not in pids]
        if not main:
            return None
        oldest = min(main, key=lambda p: p.starttime)
        self._write_pidfile(ref, oldest.pid, oldest.starttime)
        return oldest.pid

    def _reap(self) -> None:
        for child in self._children.values():
            child.poll()

    def _how_it_ended(self, ref: ServiceRef) -> str:
        child = self._children.get(marker_of(ref))
        code = child.poll() if child else None
        if code is None:
            return "not running"
        if code < 0:
            return f"not running: killed by {signal.Signals(-code).name}"
        return f"not running: exited with code {code}"

    # -- starting -------------------------------------------------------------------------------

    def _start(self, ref: ServiceRef) -> ServiceHandle:
        pid = self.find(ref)
        if pid is not None:
            return ServiceHandle(pid=pid, adopted=True)
        # A previous instance that died may have left forks behind: never two of anything.
        self._kill_leftovers(ref)
        spec = ref.service
        assert spec.command, "process services have a command (the model checks)"
        log_path = self.log_path(ref)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lease = self.sandbox.uids.acquire() if self.sandbox.uids and not self.user else None
        try:
            uid_gid = (lease.uid, lease.gid) if lease else self.user
            metrics_gid = self.sandbox.metrics_gid
            if lease is not None and metrics_gid is not None and self.sandbox.reads_metrics(ref):
                uid_gid = (lease.uid, metrics_gid)
            cwd = self._place(ref, uid_gid)
            options: dict[str, Any] = {
                "cgroups": [str(c) for c in self._make_cgroups(ref)],
                "uid": uid_gid[0] if uid_gid else None,
                "gid": uid_gid[1] if uid_gid else None,
                "cwd": cwd,
                "env": {**BASE_ENV, "HOME": cwd, **spec.env, MARKER: marker_of(ref)},
                "contain": CONTAIN_MODULE,
            }
            if self.sandbox.mounts:
                # A home is bound back as is (it is the service's own); a definition's cwd
                # only where that uncovers nothing hidden.
                binds = self.sandbox.bind_for(cwd) if spec.cwd else [cwd]
                options["mounts"] = {
                    "covers": self.sandbox.covers(binds),
                    "binds": binds,
                    "files": list(self.sandbox.files),
                }
                # Then a minimal root, as a script run's: system and interpreter trees
                # read-only, its own directory, /tmp, /dev/shm; no other host directory.
                options["root"] = {
                    "trees": list(self.sandbox.trees),
                    "tmp_mb": self.sandbox.tmp_mb,
                }
            return self._spawn(ref, options, lease)
        finally:
            if lease is not None:
                UidPool.release(lease)  # the service holds it now (or the start failed)

    def _place(self, ref: ServiceRef, uid_gid: tuple[int, int] | None) -> str:
        """The service's working directory: its definition's, or a fresh home of its own."""
        if ref.service.cwd:
            return os.path.realpath(ref.service.cwd)
        home = self._home(ref)
        if uid_gid is None:
            home.mkdir(parents=True, exist_ok=True)
            return str(home)
        # Root-only on the way: the home is reachable only by the service, through its mounts.
        home.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home.parent, 0o700)
        shutil.rmtree(home, ignore_errors=True)  # what an earlier instance (or uid) left
        home.mkdir(mode=0o700)
        os.chown(home, *uid_gid)
        return str(home)

    def _make_cgroups(self, ref: ServiceRef) -> list[Path]:
        cgroups = self._cgroups(ref)
        limits = {
            "pids.max": self.sandbox.max_processes,
            "memory.limit_in_bytes": self.sandbox.memory_mb and self.sandbox.memory_mb * 2**20,
        }
        for cgroup in cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
            for name, value in limits.items():
                if value and (cgroup / name).exists():
                    (cgroup / name).write_text(str(value))
        return cgroups

    def _spawn(
        self, ref: ServiceRef, options: dict[str, Any], lease: UidLease | None
    ) -> ServiceHandle:
        spec = ref.service
        assert spec.command, "process services have a command (the model checks)"
        with open(self.log_path(ref), "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            log.write(f"--- shopfloor: starting {spec.name} at {stamp}\n".encode())
            log.flush()
            child = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), *spec.command],
                cwd="/",  # the launcher enters the service's own once its mounts are made
                # Nothing of the service's own environment reaches this root launcher.
                env={**BASE_ENV, MARKER: marker_of(ref), "SHOPFLOOR_LAUNCH": json.dumps(options)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The uid's lease: inherited across the exec, held as long as the service (or
                # anything it forked) lives.
                pass_fds=(lease.fd,) if lease else (),
            )
        self._children[marker_of(ref)] = child
        started = _procfs.stat(child.pid)
        self._write_pidfile(ref, child.pid, started.starttime if started else 0)
        return ServiceHandle(pid=child.pid)

    def _write_pidfile(self, ref: ServiceRef, pid: int, starttime: int) -> None:
        path = self._pidfile(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps({"pid": pid, "starttime": starttime, "token": ref.run_token}))
        tmp.replace(path)

    # -- stopping -------------------------------------------------------------------------------

    def _stop(self, ref: ServiceRef) -> StopReport:
        pid = self.find(ref)
        if pid is not None:
            started = _procfs.stat(pid)
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + ref.service.stop_timeout_s
            while time.monotonic() < deadline and started and _still(started):
                self._reap()
                time.sleep(0.05)
            _signal_group(pid, signal.SIGKILL)
        self._kill_leftovers(ref)
        self._pidfile(ref).unlink(missing_ok=True)
        if not ref.service.cwd:
            shutil.rmtree(self._home(ref), ignore_errors=True)
        child = self._children.pop(marker_of(ref), None)
        if child is not None:
            child.wait()
        return StopReport(was_running=pid is not None)

    def _kill_leftovers(self, ref: ServiceRef) -> None:
        """SIGKILL whatever is left of the service: its cgroups' processes (even those that
        left its session or changed their environment) and anything carrying its marker."""
        cgroups = self._cgroups(ref)
        for _ in range(100):
            marked = {p.pid for p in _procfs.marked(MARKER, marker_of(ref))}
            for pid in marked:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # The sandbox's cgroup killer, a round at a time: beside the marked ones.
            emptied = [kill_cgroup(cgroup, rounds=1, pause_s=0) for cgroup in cgroups]
            if not marked and all(emptied):
                break
            time.sleep(0.02)
            self._reap()
        for cgroup in cgroups:
            for path in (cgroup, cgroup.parent):
                try:
                    path.rmdir()
                except OSError:
                    pass  # gone already, or (the parent) other services still use it

    # -- logs -----------------------------------------------------------------------------------

    def _tail(self, ref: ServiceRef) -> str:
        try:
            with open(self.log_path(ref), "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(size - LOG_TAIL_BYTES, 0))
                data = log.read()
        except OSError:
            return ""
        text = data.decode(errors="replace")
        return text.split("\n", 1)[-1] if size > LOG_TAIL_BYTES else text


def _still(proc: _procfs.ProcStat) -> bool:
    return _procfs.running(proc.pid, proc.starttime)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
