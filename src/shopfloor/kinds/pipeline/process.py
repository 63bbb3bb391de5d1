"""The `process` runtime: services as local processes, detached from the worker.

Each service runs in its own session (it outlives the worker: a pipeline keeps running while
workers come and go), writes stdout/stderr to `<run dir>/<pipeline>/<service>.log`, and is
identified by a marker in its environment plus a pidfile holding its pid and /proc start time.
So a start retried after a worker crash finds the running service instead of starting a second.

The marker names the pipeline, the service, the run (its token), the stack (its runtime
directory: two stacks' pipelines of one name are not each other's) and the job (workflow id)
that started it. A pipeline owns what carries its marker, not
whatever answers a port:

- a start first stops what earlier runs of the same pipeline left running (a run that was
  terminated, a host that crashed) and says so (`ServiceHandle.leftovers`, the service's log,
  the worker's log); a stop does too (`pipeline stop` after a terminate stops the orphans). A
  run of the same pipeline that is still running under another job is not a leftover: the start
  is refused, naming that job;
- a health check counts only while the service's own process lives and nobody else listens
  where the check connects: a port answered by a stranger is reported with its pid and command
  (`Probe.stranger`), and a start fails at once on it.

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
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shopfloor.jobs import invalid_input
from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.health import CommandChecks, check_health
from shopfloor.kinds.pipeline.models import (
    HealthCheck,
    Probe,
    ServiceHandle,
    ServiceRef,
    StopReport,
)
from shopfloor.kinds.pipeline.runtime import LOG_TAIL_BYTES, current_job, job_running
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.processes import listening_pid, open_files
from shopfloor.sandbox import UidLease, UidPool, _contain, cgroup_pids, kill_cgroup
from shopfloor.sandbox._contain import interpreter_trees
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.pipeline")

# <pipeline>/<service>/<run token>/<stack>/<job>: the job is the workflow id that started it.
MARKER = "SHOPFLOOR_PIPELINE_SERVICE"
# The launcher runs with -I -S (no package import): it loads the sandbox's levers from here.
CONTAIN_MODULE = str(Path(_contain.__file__).resolve())
CGROUP_ROOT = Path("/sys/fs/cgroup/pids/shopfloor-pipelines")
MEMORY_CGROUP_ROOT = Path("/sys/fs/cgroup/memory/shopfloor-pipelines")
LAUNCHER = Path(__file__).with_name("_launch.py")
# What a service's environment starts from: nothing of the worker's (its settings hold keys).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def stack_of(run_dir: Path) -> str:
    """Which stack a service belongs to: its runtime directory (each stack's data dir has one;
    the workers of one stack share it), as a short digest."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]


def marker_of(ref: ServiceRef, stack: str, job: str) -> str:
    return f"{ref.pipeline}/{ref.service.name}/{ref.run_token}/{stack}/{job}"


@dataclass(frozen=True)
class Instance:
    """A live process carrying some run's marker of a service of this stack."""

    proc: _procfs.ProcStat
    token: str
    job: str


def _local_ips(host: str) -> list[str]:
    """The addresses `host` names that are this machine's own (bindable here): where a check's
    connection lands on a local listener. [] for another machine's."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        if ip in found:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((ip, 0))
        except OSError:
            continue
        found.append(ip)
    return found


def check_endpoint(check: HealthCheck | None) -> tuple[list[str], int] | None:
    """Where an HTTP or TCP check connects, when that is on this machine: (addresses, port)."""
    if check is None or check.command:
        return None
    if check.tcp:
        host, _, port_text = check.tcp.rpartition(":")
        port = int(port_text)
    else:
        assert check.http
        url = urlsplit(check.http)
        host = url.hostname or ""
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return None
    ips = _local_ips(host)
    return (ips, port) if ips else None


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
        self.stack = stack_of(run_dir)
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
        stale, _ = await self._stale_runs(ref, starting=True)
        return await asyncio.to_thread(self._start, ref, stale)

    async def probe(self, ref: ServiceRef) -> Probe:
        health = ref.service.health
        endpoint = check_endpoint(health)
        pid = await asyncio.to_thread(self.find, ref)
        if pid is None:
            error = self._how_it_ended(ref)
            stranger = await asyncio.to_thread(self.stranger, ref, endpoint)
            return Probe(
                alive=False,
                healthy=False,
                error=f"{error}; {stranger}" if stranger else error,
                stranger=stranger,
                log_tail=self._tail(ref),
            )
        started = _procfs.stat(pid)
        failed = await check_health(health, commands=self.checks) if health else None
        # Whatever the check said, it counts only if nobody else listens where it connected,
        # and only if the service's own process lived through it.
        stranger = await asyncio.to_thread(self.stranger, ref, endpoint)
        if stranger:
            failed = f"{failed}; {stranger}" if failed else stranger
        elif started is None or not _still(started):
            return Probe(
                alive=False,
                healthy=False,
                error=f"{self._how_it_ended(ref)} (during its health check)",
                log_tail=self._tail(ref),
            )
        return Probe(
            alive=True,
            healthy=failed is None,
            error=failed,
            pid=pid,
            stranger=stranger,
            log_tail=self._tail(ref) if failed else "",
        )

    async def stop(self, ref: ServiceRef) -> StopReport:
        stale, shared = await self._stale_runs(ref, starting=False)
        return await asyncio.to_thread(self._stop, ref, stale, shared)

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
        procs = self._procs(ref)
        pids = {p.pid for p in procs}
        main = [p for p in procs if p.sid == p.pid and p.ppid not in pids]
        if not main:
            return None
        oldest = min(main, key=lambda p: p.starttime)
        self._write_pidfile(ref, oldest.pid, oldest.starttime)
        return oldest.pid

    def _marker(self, ref: ServiceRef) -> str:
        return marker_of(ref, self.stack, current_job())

    def _instances(self, ref: ServiceRef) -> list[Instance]:
        """Live processes of this stack's service `ref.service`, of any run of the pipeline."""
        found = []
        for proc, env in _procfs.carrying(MARKER):
            parts = env[MARKER].split("/", 4)
            if len(parts) != 5:
                continue
            pipeline, service, token, stack, job = parts
            if (pipeline, service, stack) == (ref.pipeline, ref.service.name, self.stack):
                found.append(Instance(proc=proc, token=token, job=job))
        return found

    def _procs(self, ref: ServiceRef) -> list[_procfs.ProcStat]:
        """Live processes carrying this run's marker of the service."""
        return [i.proc for i in self._instances(ref) if i.token == ref.run_token]

    def own_pids(self, ref: ServiceRef) -> set[int]:
        """Every live process of this run's instance of the service: its marked processes and
        whatever is in its cgroups (even a fork that left its session or scrubbed its env)."""
        pids = {p.pid for p in self._procs(ref)}
        for cgroup in self._cgroups(ref):
            pids |= _pids_in(cgroup)
        return pids

    def stranger(self, ref: ServiceRef, endpoint: tuple[list[str], int] | None) -> str | None:
        """Who else listens where the service's health check connects (None: nobody, or only
        the service itself): "127.0.0.1:8080 is answered by pid 123 (python3 -m http.server
        8080), not by loki's own processes"."""
        if endpoint is None:
            return None
        ips, port = endpoint
        inodes: set[int] = set()
        for ip in ips:
            inodes |= _procfs.listeners(ip, port)
        if not inodes:
            return None
        own = self.own_pids(ref)
        held: set[int] = set()
        for pid in own:
            held |= _procfs.socket_inodes(pid)
        foreign = inodes - held
        if not foreign:
            return None
        pids = sorted(_procfs.holders(foreign) - own)
        if pids:
            who = ", ".join(
                f"pid {pid} ({_procfs.cmdline(pid) or 'command not visible'})" for pid in pids[:3]
            )
        else:
            who = "a process this worker cannot see"
        where = f"{ips[0]}:{port}" if ":" not in ips[0] else f"[{ips[0]}]:{port}"
        return f"{where} is answered by {who}, not by {ref.service.name}'s own processes"

    # -- what earlier runs left ----------------------------------------------------------------

    def _earlier_runs(self, ref: ServiceRef) -> dict[str, str]:
        """Run token → job of earlier runs of this pipeline that left something of this service
        on this host: marked processes, or (a fork that scrubbed its environment) a cgroup."""
        runs: dict[str, str] = {}
        for inst in self._instances(ref):
            if inst.token != ref.run_token:
                runs.setdefault(inst.token, inst.job)
        try:
            recorded = json.loads(self._pidfile(ref).read_text())
            token = recorded.get("token")
            if isinstance(token, str) and token and token != ref.run_token:
                other = ref.model_copy(update={"run_token": token})
                if any(_pids_in(c) for c in self._cgroups(other)):
                    runs.setdefault(token, str(recorded.get("job", "")))
        except (OSError, ValueError, AttributeError):
            pass
        return runs

    async def _stale_runs(self, ref: ServiceRef, *, starting: bool) -> tuple[dict[str, str], bool]:
        """The earlier runs whose leftovers this start or stop may stop: any whose job is not
        running. One whose job still runs (the same pipeline under another job id) is no
        leftover: a start is refused, naming it; a stop leaves it alone, and says so with the
        second value (that run shares the service's pidfile and home: not the stop's to clear)."""
        runs = await asyncio.to_thread(self._earlier_runs, ref)
        mine = current_job()
        if not runs or not mine:
            return runs, False
        stale = {}
        for token, job in runs.items():
            # Our own job id: only one run of a workflow id runs at a time, and it is this one.
            if not job or job == mine or not await job_running(job):
                stale[token] = job
            elif starting:
                raise invalid_input(
                    f"pipeline {ref.pipeline!r} is already running on this host as job {job!r} "
                    f"(its {ref.service.name} is run {token}): stop that job first"
                )
        return stale, len(stale) < len(runs)

    def _stop_earlier(self, ref: ServiceRef, runs: dict[str, str]) -> list[str]:
        """Stops what the earlier `runs` left of this service: SIGTERM to each of its process
        groups, SIGKILL after its stop timeout, then everything left in its cgroups. Says so
        in the service's log and the worker's; returns what it stopped."""
        stopped: list[str] = []
        for token, job in runs.items():
            other = ref.model_copy(update={"run_token": token})
            procs = self._procs(other)
            pids = {p.pid for p in procs}
            main = [p for p in procs if p.sid == p.pid and p.ppid not in pids]
            for p in main:
                _signal_group(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + ref.service.stop_timeout_s
            while time.monotonic() < deadline and any(_still(p) for p in main):
                time.sleep(0.05)
            self._kill_leftovers(other)
            what = ", ".join(f"pid {p.pid}" for p in main) or "forks in its cgroup"
            stopped.append(
                f"{ref.service.name} {what} of an earlier run ({token}"
                + (f", job {job})" if job else ")")
            )
        if stopped:
            message = f"stopped what earlier runs of pipeline {ref.pipeline!r} left: " + "; ".join(
                stopped
            )
            log.warning("%s", message)
            try:
                self.log_path(ref).parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path(ref), "a") as out:
                    out.write(f"--- shopfloor: {message}\n")
            except OSError:
                pass
        return stopped

    def _reap(self) -> None:
        for child in self._children.values():
            child.poll()

    def _how_it_ended(self, ref: ServiceRef) -> str:
        child = self._children.get(_key(ref))
        code = child.poll() if child else None
        if code is None:
            return "not running"
        if code < 0:
            return f"not running: killed by {signal.Signals(-code).name}"
        return f"not running: exited with code {code}"

    # -- starting -------------------------------------------------------------------------------

    def _start(self, ref: ServiceRef, stale: dict[str, str]) -> ServiceHandle:
        leftovers = self._stop_earlier(ref, stale)
        pid = self.find(ref)
        if pid is not None:
            return ServiceHandle(pid=pid, adopted=True, leftovers=leftovers)
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
                "env": {
                    **BASE_ENV,
                    "HOME": cwd,
                    **spec.env,
                    MARKER: self._marker(ref),
                },
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
            handle = self._spawn(ref, options, lease)
            handle.leftovers = leftovers
            return handle
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
                env={
                    **BASE_ENV,
                    MARKER: self._marker(ref),
                    "SHOPFLOOR_LAUNCH": json.dumps(options),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The uid's lease: inherited across the exec, held as long as the service (or
                # anything it forked) lives.
                pass_fds=(lease.fd,) if lease else (),
            )
        self._children[_key(ref)] = child
        started = _procfs.stat(child.pid)
        self._write_pidfile(ref, child.pid, started.starttime if started else 0)
        return ServiceHandle(pid=child.pid)

    def _write_pidfile(self, ref: ServiceRef, pid: int, starttime: int) -> None:
        path = self._pidfile(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pid.tmp")
        record = {"pid": pid, "starttime": starttime, "token": ref.run_token, "job": current_job()}
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    # -- stopping -------------------------------------------------------------------------------

    def _stop(self, ref: ServiceRef, stale: dict[str, str], shared: bool = False) -> StopReport:
        leftovers = self._stop_earlier(ref, stale)
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
        if not shared:
            self._pidfile(ref).unlink(missing_ok=True)
            if not ref.service.cwd:
                shutil.rmtree(self._home(ref), ignore_errors=True)
        child = self._children.pop(_key(ref), None)
        if child is not None:
            child.wait()
        return StopReport(was_running=pid is not None or bool(leftovers), leftovers=leftovers)

    def _kill_leftovers(self, ref: ServiceRef) -> None:
        """SIGKILL whatever is left of the service: its cgroups' processes (even those that
        left its session or changed their environment) and anything carrying its marker."""
        cgroups = self._cgroups(ref)
        for _ in range(100):
            marked = {p.pid for p in self._procs(ref)}
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


def _key(ref: ServiceRef) -> str:
    return f"{ref.pipeline}/{ref.service.name}/{ref.run_token}"


def _still(proc: _procfs.ProcStat) -> bool:
    return _procfs.running(proc.pid, proc.starttime)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_in(cgroup: Path | None) -> set[int]:
    return set(cgroup_pids(cgroup)) if cgroup is not None else set()
