"""Per-run cgroups (v1 `pids` and `memory` controllers): cap and reliably kill a run's whole
process tree, and bound the memory of all its processes together.

Cgroups are pooled and reused: moving a process into a cgroup it has never held costs the
kernel ~10 ms per job (a new css_set, freed through RCU); into a used one, almost nothing.
Each worker process keeps its cgroups under `<controller>/shopfloor/<its pid>/`, so concurrent
workers never touch each other's, and a worker at start removes (and empties) those of workers
that are gone.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup")
PIDS_CGROUP_ROOT = CGROUP_V1 / "pids"
MEMORY_CGROUP_ROOT = CGROUP_V1 / "memory"

_POOL_MAX = 64
_pools: dict[Path, list[Path]] = {}  # controller root → empty cgroups ready for the next run
_swept: set[Path] = set()


def _own_parent(root: Path) -> Path:
    return root / "shopfloor" / str(os.getpid())


def usable(root: Path) -> bool:
    """Whether this process can create cgroups under `root` (a v1 controller mount)."""
    if not (root / "cgroup.procs").exists():
        return False
    try:
        _own_parent(root).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def cgroup_pids(path: Path) -> list[int]:
    """The processes in the cgroup at `path` ([] when it is gone)."""
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def kill_cgroup(path: Path, *, rounds: int = 50, pause_s: float = 0.01) -> bool:
    """The one cgroup killer (runs, pipeline services): SIGKILLs every process in the cgroup
    until it is seen empty (True), or `rounds` passed. A fork bomb keeps forking while we
    kill; pids.max bounds it, a few rounds finish it."""
    for _ in range(rounds):
        pids = cgroup_pids(path)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(pause_s)
    return False


def sweep_stale(root: Path) -> None:
    """Kill what is left in, and remove, the cgroups of worker processes that died without
    `release_pool` (a SIGKILL): their runs must not live on."""
    for parent in (root / "shopfloor").glob("*"):
        if not parent.name.isdigit() or Path(f"/proc/{parent.name}").exists():
            continue
        for child in parent.glob("*"):
            if child.is_dir():
                kill_cgroup(child)
                _rmdir_quietly(child)
        _rmdir_quietly(parent)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # still has processes, or already gone


def release_pool() -> None:
    """Removes this process's pooled (empty) cgroups and their parents: call it when the
    process stops running jobs (the worker's zygotes lifespan does)."""
    for root, pool in _pools.items():
        while pool:
            _rmdir_quietly(pool.pop())
        _rmdir_quietly(_own_parent(root))


class _Cgroup:
    ROOT: Path

    def __init__(self, path: Path) -> None:
        self.path = path
        # Seen empty once its run's main process had exited: nothing can join it again (only
        # a member's fork could), so it need not be read again before it goes to the pool.
        self._emptied = False

    @classmethod
    def _take(cls, configure: dict[str, str]) -> Path | None:
        """A pooled or new cgroup with `configure` (file → value) written; None when this
        machine gives us no writable hierarchy (the caller falls back)."""
        pool = _pools.setdefault(cls.ROOT, [])
        while pool:
            path = pool.pop()
            try:
                for name, value in configure.items():
                    (path / name).write_text(value)
                return path
            except OSError:
                _rmdir_quietly(path)
                continue
        if not (cls.ROOT / "cgroup.procs").exists():
            return None
        if cls.ROOT not in _swept:
            _swept.add(cls.ROOT)
            sweep_stale(cls.ROOT)
        path = _own_parent(cls.ROOT) / uuid.uuid4().hex[:12]
        try:
            path.mkdir(parents=True)
            for name, value in configure.items():
                (path / name).write_text(value)
        except OSError:
            _rmdir_quietly(path)
            return None
        return path

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    @property
    def join_file(self) -> Path:
        """What a freshly forked (single-threaded) child writes "0" to, to join. `tasks`
        moves the calling thread, which is then the whole process; unlike `cgroup.procs` it
        spares the kernel's global threadgroup lock, whose RCU grace period made each run
        wait ~10 ms (unless another run had just taken it)."""
        return self.path / "tasks"

    def pids(self) -> list[int]:
        return cgroup_pids(self.path)

    def kill_all(self, *, run_over: bool = False) -> None:
        """Kills every process in it. `run_over`: the run's main process has exited, so once
        seen empty it stays so (a kill while the run starts may come before it joined)."""
        if run_over and self._emptied:
            return
        emptied = kill_cgroup(self.path)
        if run_over:
            self._emptied = emptied

    def release(self) -> None:
        """Kills what is left in it, then returns it to the pool (removed if the pool is full)."""
        self.kill_all(run_over=True)
        pool = _pools.setdefault(self.ROOT, [])
        if self._emptied and len(pool) < _POOL_MAX:
            pool.append(self.path)
            return
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError as err:
                if err.errno == errno.ENOENT:
                    return
                self.kill_all()
                time.sleep(0.02)

    def _counter(self, file: str, key: str) -> int:
        try:
            for line in (self.path / file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0


class PidsCgroup(_Cgroup):
    ROOT = PIDS_CGROUP_ROOT

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        # pids.events counts refused forks for the cgroup's whole life; a reused one starts > 0.
        self._refused_before = self._counter("pids.events", "max")

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        path = cls._take({"pids.max": str(max_pids)})
        return cls(path) if path is not None else None

    def hit_limit(self) -> bool:
        """True when a fork was refused because of pids.max during this run."""
        return self._counter("pids.events", "max") > self._refused_before


class MemoryCgroup(_Cgroup):
    """All of a run's processes together stay under `limit_in_bytes`; past it the kernel's
    OOM killer kills in this cgroup only, and the run is reported as killed for memory."""

    ROOT = MEMORY_CGROUP_ROOT

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._oom_before = self._oom_kills()

    @classmethod
    def create(cls, limit_bytes: int) -> MemoryCgroup | None:
        # A reused cgroup may still hold page cache charged by the last run: the new limit
        # reclaims it (or the write fails and a fresh cgroup is made).
        path = cls._take({"memory.limit_in_bytes": str(limit_bytes)})
        return cls(path) if path is not None else None

    def set_limit(self, limit_bytes: int) -> None:
        (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))

    def _oom_kills(self) -> int:
        return self._counter("memory.oom_control", "oom_kill")

    def oom_killed(self) -> bool:
        """True when the OOM killer killed one of this run's processes during the run."""
        return self._oom_kills() > self._oom_before
