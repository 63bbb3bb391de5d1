"""The `process` runtime: services as local processes, detached from the worker.

Each service runs in its own session (it outlives the worker: a pipeline keeps running while
workers come and go), writes stdout/stderr to `<run dir>/<pipeline>/<service>.log`, and is
identified by a marker in its environment plus a pidfile holding its pid and /proc start time.
So a start retried after a worker crash finds the running service instead of starting a second.

When the worker runs as root, services run as an unprivileged uid of their own (by default;
`pipeline_run_as` may name one user for all instead) and in a
pids cgroup of their own when /sys/fs/cgroup/pids is writable: stopping a service then kills
everything it forked, even children that left its session, whichever worker does the stopping.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.health import check_health
from shopfloor.kinds.pipeline.models import Probe, ServiceHandle, ServiceRef, StopReport
from shopfloor.kinds.pipeline.runtime import LOG_TAIL_BYTES

MARKER = "SHOPFLOOR_PIPELINE_SERVICE"
CGROUP_ROOT = Path("/sys/fs/cgroup/pids/shopfloor-pipelines")
LAUNCHER = Path(__file__).with_name("_launch.py")
# What a service's environment starts from: nothing of the worker's (its settings hold keys).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def marker_of(ref: ServiceRef) -> str:
    return f"{ref.pipeline}/{ref.service.name}/{ref.run_token}"


# `pipeline_run_as = "per-service"`: each service its own uid/gid, derived from its pipeline
# and name (stable across workers and restarts, so a retried start or a stop from another
# worker agrees), in a range apart from the job runs' pool. Services then cannot signal or
# read each other, as job runs cannot.
PER_SERVICE = "per-service"
SERVICE_UID_BASE, SERVICE_UID_COUNT = 201_000, 1_000


def service_uid(ref: ServiceRef) -> int:
    digest = hashlib.sha256(f"{ref.pipeline}/{ref.service.name}".encode()).digest()
    return SERVICE_UID_BASE + int.from_bytes(digest[:4], "big") % SERVICE_UID_COUNT


def _user(name: str) -> tuple[int, int] | None:
    """The uid/gid services run as: only a root worker can (and must) drop privileges."""
    if os.geteuid() != 0 or not name or name == PER_SERVICE:
        return None
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _cgroups_usable(root: Path | None) -> Path | None:
    if root is None or os.geteuid() != 0 or not (root.parent / "cgroup.procs").exists():
        return None
    try:
        root.mkdir(exist_ok=True)
    except OSError:
        return None
    return root


class ProcessRuntime:
    def __init__(
        self, run_dir: Path, *, run_as: str = "", cgroup_root: Path | None = CGROUP_ROOT
    ) -> None:
        self.run_dir = run_dir
        self.user = _user(run_as)
        self.per_service = run_as == PER_SERVICE and os.geteuid() == 0
        self.cgroup_root = _cgroups_usable(cgroup_root)
        # Services this worker started: polled so that they are reaped when they exit (a
        # zombie is no service), and to say how they ended.
        self._children: dict[str, subprocess.Popen] = {}

    # -- where things are ---------------------------------------------------------------------

    def log_path(self, ref: ServiceRef) -> Path:
        return self.run_dir / ref.pipeline / f"{ref.service.name}.log"

    def _pidfile(self, ref: ServiceRef) -> Path:
        return self.run_dir / ref.pipeline / f"{ref.service.name}.pid"

    def _cgroup(self, ref: ServiceRef) -> Path | None:
        if self.cgroup_root is None:
            return None
        return self.cgroup_root / f"{ref.pipeline}.{ref.run_token}" / ref.service.name

    # -- the runtime interface ----------------------------------------------------------------

    async def start(self, ref: ServiceRef) -> ServiceHandle:
        return await asyncio.to_thread(self._start, ref)

    async def probe(self, ref: ServiceRef) -> Probe:
        pid = await asyncio.to_thread(self.find, ref)
        if pid is None:
            return Probe(
                alive=False, healthy=False, error=self._how_it_ended(ref), log_tail=self._tail(ref)
            )
        error = await check_health(ref.service.health) if ref.service.health else None
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
                return recorded["pid"]
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
        cgroup = self._cgroup(ref)
        if cgroup is not None:
            cgroup.mkdir(parents=True, exist_ok=True)
        uid_gid = (service_uid(ref),) * 2 if self.per_service else self.user
        options = {
            "cgroup": str(cgroup) if cgroup else None,
            "uid": uid_gid[0] if uid_gid else None,
            "gid": uid_gid[1] if uid_gid else None,
        }
        cwd = spec.cwd or "/"
        env = {**BASE_ENV, "HOME": cwd, **spec.env, MARKER: marker_of(ref)}
        with open(log_path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            log.write(f"--- shopfloor: starting {spec.name} at {stamp}\n".encode())
            log.flush()
            child = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(options), *spec.command],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
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
        child = self._children.pop(marker_of(ref), None)
        if child is not None:
            child.wait()
        return StopReport(was_running=pid is not None)

    def _kill_leftovers(self, ref: ServiceRef) -> None:
        """SIGKILL whatever is left of the service: its cgroup's processes (even those that
        left its session or changed their environment) and anything carrying its marker."""
        cgroup = self._cgroup(ref)
        for _ in range(100):
            pids = _cgroup_pids(cgroup) | {p.pid for p in _procfs.marked(MARKER, marker_of(ref))}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
            self._reap()
        if cgroup is not None:
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


def _cgroup_pids(cgroup: Path | None) -> set[int]:
    if cgroup is None:
        return set()
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except OSError:
        return set()
